// Opens an exported transcript page in headless Chromium and uses it as a
// person would: the page renders, tokens are coloured by expert, and
// hovering a token shows its routing per layer. Prints TAP lines; writes
// screenshots next to the page.   node check.mjs PAGE.html N_LAYERS
import { chromium } from 'playwright-core';

const [page_path, n_layers] = [process.argv[2], Number(process.argv[3])];
let n = 0, failed = 0;
const ok = (cond, what) => { n++; if (!cond) failed++; console.log(`${cond ? '' : 'not '}ok ${n} - ${what}`); };

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1000, height: 700 } });
const requests = [];
page.on('request', r => { if (!r.url().startsWith('file:')) requests.push(r.url()); });
const errors = [];
page.on('pageerror', e => errors.push(String(e)));
await page.goto('file://' + page_path);

const tokens = await page.$$('#text .t');
ok(tokens.length > 0, `the page renders ${tokens.length} tokens`);
const colours = new Set(await page.$$eval('#text .t', els => els.map(e => getComputedStyle(e).backgroundColor)));
ok(colours.size >= 2, `tokens are coloured by expert (${colours.size} distinct colours)`);
const legend = await page.$$('#legend .lg');
ok(legend.length >= 2, `a legend names ${legend.length} experts`);
await page.screenshot({ path: page_path.replace(/\.html$/, '.png') });

const before = await page.$eval('#panel', p => p.innerText);
await tokens[Math.min(3, tokens.length - 1)].hover();
await page.waitForTimeout(200);
const rows = await page.$$('#panel .lay');
const text = await page.$eval('#panel', p => p.innerText);
ok(rows.length === n_layers && text !== before, `hovering a token shows its routing in ${rows.length} layers`);
const bars = await page.$$('#panel .bar');
ok(bars.length >= n_layers * 2, `with a probability bar per expert (${bars.length} bars)`);
await page.screenshot({ path: page_path.replace(/\.html$/, '-hover.png') });
ok(requests.length === 0, `no network requests (${requests.join(' ') || 'none'})`);
ok(errors.length === 0, `no script errors (${errors.join('; ') || 'none'})`);
await browser.close();
console.log(`1..${n}`);
process.exit(failed ? 1 : 0);
