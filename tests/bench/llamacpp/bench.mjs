// llama.cpp on a GGUF file, through node-llama-cpp's prebuilt binaries
// (ggml picks its CPU backend at run time): ppN and tgN as llama-bench
// measures them (a warm-up, then each run from an empty context; pp: N
// random token ids evaluated as one prompt; tg: N tokens generated one at a
// time, greedy, after a one-token prompt), the median of the runs. Token
// ids are drawn from 100 up to VOCAB (30100).
//   node bench.mjs MODEL.gguf [RUNS] [THREADS] [PP,...] [TG] [VOCAB]
// Prints one JSON line.
import {getLlama} from "node-llama-cpp";

const [modelPath, runsArg, threadsArg, ppArg, tgArg, vocabArg] = process.argv.slice(2);
const runs = Number(runsArg || 5), threads = Number(threadsArg || 2);
const pps = (ppArg || "128").split(",").map(Number).filter(n => n > 0), tgn = Number(tgArg || 64);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const ctx = await model.createContext({contextSize: Math.max(1024, ...pps) + 64, batchSize: 512, threads, sequences: 1});
const seq = ctx.getSequence();
let seed = 1;
const top = Number(vocabArg || 30100);
const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) % (top - 100) + 100;
const median = a => {
    const s = [...a].sort((x, y) => x - y);
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const secs = t0 => Number(process.hrtime.bigint() - t0) / 1e9;

async function pp(n) {
    await seq.clearHistory();
    const toks = Array.from({length: n}, rnd);
    const t0 = process.hrtime.bigint();
    await seq.evaluateWithoutGeneratingNewTokens(toks);
    return n / secs(t0);
}

async function tg(n) {
    await seq.clearHistory();
    let got = 0;
    const t0 = process.hrtime.bigint();
    for await (const t of seq.evaluate([rnd()], {temperature: 0})) {
        void t;
        if (++got >= n)
            break;
    }
    return n / secs(t0);
}

await pp(pps[0] || 16); // warm-up, as llama-bench does
await tg(8);
const out = {model: modelPath, threads, runs};
for (const n of pps) {
    const r = [];
    for (let i = 0; i < runs; i++)
        r.push(await pp(n));
    out["pp" + n] = median(r);
    out["pp" + n + "_runs"] = r.map(x => +x.toFixed(1));
}
if (tgn > 0) {
    const r = [];
    for (let i = 0; i < runs; i++)
        r.push(await tg(tgn));
    out["tg" + tgn] = median(r);
    out["tg" + tgn + "_runs"] = r.map(x => +x.toFixed(1));
}
console.log(JSON.stringify(out));
process.exit(0);
