#!/usr/bin/env python3
"""Writes tests/data/tokenizer/strings.json: the texts the tokenizer tests
encode. Hand-written seeds, combined deterministically so each category
(prose, code, numbers, whitespace, emoji, scripts, specials, long words)
has many cases. The golden ids come from tools/tokref/gen_golden.mjs."""
import json, os

prose = [
    "The quick brown fox jumps over the lazy dog.",
    "It was the best of times, it was the worst of times.",
    "She said, \"I don't think we're ready,\" and left.",
    "Mixture-of-Experts models route each token to a few experts.",
    "In 1969, Apollo 11 landed on the Moon; Armstrong stepped out first.",
    "Tom has 3 apples and buys 5 more. How many does he have now?",
    "The committee's report (released Tuesday) was 245 pages long.",
    "Don't panic! It's only a test... or is it?",
    "We'll see what they've done; I'd guess they'll be late.",
    "E-mail me at someone@example.com or visit https://example.org/a?b=c&d=e.",
    "Mr. and Mrs. Dursley, of number four, Privet Drive, were proud to say that they were perfectly normal.",
    "Call me Ishmael. Some years ago—never mind how long precisely—I went to sea.",
    "A router picks experts; a gate weighs them; the residual stream adds it all up.",
    "The price rose 12.5% to $1,234.56 per share on 2024-03-15.",
    "Why? Because YOU said SO, that's WHY!!!",
    "“Curly quotes” and ‘single ones’ – with en dashes — and em dashes.",
    "I'M SHOUTING BUT IT'S FINE, YOU'RE FINE, WE'VE BEEN HERE.",
    "naïve café résumé coöperate façade jalapeño",
    "Hello, world!",
    "hello",
    " hello",
    "Hello World",
    "This is a sentence.\nThis is another one.\n\nA new paragraph.",
    "Line one\r\nLine two\r\n",
    "Tokenizers split text into pieces; the pieces become ids.",
    "The capital of France is Paris, and the capital of Japan is Tokyo.",
    "Photosynthesis converts light energy into chemical energy.",
    "O'Neill's dog didn't bark; the Smiths' cat did.",
    "He scored 100/100 on the test and 99.9 on the next.",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
]
code = [
    "def f(x):\n    return x * 2\n",
    "int main(void)\n{\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "for (int i = 0; i < n; i++) {\n        sum += a[i] * b[i];\n}",
    "if x == 1:\n\tif y:\n\t\tpass\n",
    "const xs = [1, 2, 3].map((x) => x ** 2);",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "#include <stdio.h>\n#define MAX(a, b) ((a) > (b) ? (a) : (b))\n",
    "    indented four\n        indented eight\n",
    "x=1;y=2;z=x+y",
    "fn main() { println!(\"{}\", vec![1u8; 3].len()); }",
    "<div class=\"a\"><span>hi</span></div>",
    "{\"key\": [1, 2.5, true, null], \"nested\": {\"a\": \"b\"}}",
    "$ ls -la | grep '^d' && echo done",
    "    \n    \n",
    "a\tb\tc\n1\t2\t3\n",
    "// comment\n/* block */\nreturn;",
    "__init__ self.__dict__ __name__ == '__main__'",
    "x += 1  # trailing comment   ",
]
numbers = [
    "0", "7", "42", "123", "1234", "12345", "123456789", "3.14159265358979",
    "1,000,000", "2024-01-01T12:34:56Z", "+1 (555) 010-9999", "0xDEADBEEF", "1e-10",
    "99999999999999999999", "-273.15", "1st 2nd 3rd 4th", "v1.2.3", "1/2 3/4",
    "000123", "١٢٣٤٥", "一二三 123",
]
spaces = [
    " ", "  ", "   ", "\t", "\n", "\n\n", " \n ", "a  b", "a   b", "a\t\tb",
    "trailing ", "trailing   ", "  leading", "\tleading tab", "mixed \t \n end",
    "word\n\n\n\nword", "  both  ", "a \u00a0b", "x\u3000y", "end.\n",
]
emoji = [
    "👍", "👍🏽", "I ❤️ NY", "👨‍👩‍👧‍👦 family", "🏳️‍🌈", "😀😃😄😁",
    "Good job! 🎉🎉", "🇯🇵🇺🇸", "✔️ done", "🤖 + 🧠 = ?",
]
scripts = [
    "日本語のテキストです。", "今天天气很好，我们去公园吧。", "한국어 문장입니다.",
    "مرحبا بالعالم", "اللغة العربية جميلة جداً.", "नमस्ते दुनिया", "यह एक परीक्षण वाक्य है।",
    "Привет, мир! Как дела?", "Γειά σου κόσμε", "שלום עולם", "ไทย ภาษา", "Tiếng Việt có dấu",
    "e\u0301", "cafe\u0301", "n\u0303o", "A\u030a", "\u1e9b\u0323", "ﬁ ligature", "Ｆｕｌｌｗｉｄｔｈ",
    "mixed English と日本語 and العربية",
]
long_words = [
    "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "Donaudampfschifffahrtsgesellschaftskapitän",
    "a" * 200, "ab" * 150, "xyz" * 64 + "!", "-" * 80, "=" * 33, "." * 50,
    "http://" + "very" * 40 + ".example.com",
    "😀" * 30, "日本" * 40,
]
specials = [
    "<|endoftext|>", "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "text<|im_end|>more", "<|begin_of_text|>Hello", "a <|eot_id|> b",
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<s>Hello</s>", "<s> [INST] hi [/INST]", "<unk>", "<think>\nreasoning\n</think>\n\nanswer",
    "not a special <|im_en d|> token", "<|<|im_start|>|>", "< s >", "<|reserved_special_token_5|>",
]

out = []
def add(s):
    if s not in out:
        out.append(s)
for group in (prose, code, numbers, spaces, emoji, scripts, long_words, specials):
    for s in group:
        add(s)
# Combinations: each seed in a few contexts where the splitting rules meet.
for i, s in enumerate(prose):
    add(s + " " + numbers[i % len(numbers)])
    add(scripts[i % len(scripts)] + " " + s)
    add(s.upper())
    add(s + "  " + emoji[i % len(emoji)] + " ")
for i, s in enumerate(code):
    add(s + spaces[i % len(spaces)] + code[(i + 1) % len(code)])
    add(s.replace("    ", "\t"))
for i, s in enumerate(numbers):
    add("Total: " + s + " units")
    add(s + s)
for i, s in enumerate(spaces):
    add("x" + s + "y" + s)
for i, s in enumerate(emoji + scripts):
    add(s + " " + prose[i % len(prose)].lower())
for i, s in enumerate(specials):
    add(prose[i % len(prose)] + s + " " + prose[(i + 3) % len(prose)])
    add(s + s)
for w in long_words:
    add(" " + w + " " + w[:7])

path = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "tokenizer", "strings.json")
with open(path, "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False, indent=0)
    f.write("\n")
print(len(out), "strings")
