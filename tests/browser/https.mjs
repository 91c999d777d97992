#!/usr/bin/env node
// The relay over HTTPS in a real browser: headless Chromium (playwright-core),
// trusting a test CA through an NSS database of its own, loads a page served
// over HTTPS from one origin and uses the relay over HTTPS on another: link
// and mcast both ways between two tabs, and a live stream (EventSource).
//
//   node tests/browser/https.mjs --relay https://localhost:8443 --cert page.pem \
//        --key page.key --home DIR [--chromium /usr/bin/chromium]
//
// --cert/--key: the page server's certificate (for localhost, signed by the
// test CA); --home: a HOME whose .pki/nssdb trusts that CA (the Rust test
// `browser_over_https` in tests/relay/browser.rs makes both). Each check
// prints PASS or FAIL; the exit code is non-zero when any fails.

import { chromium } from 'playwright-core';
import { readFile } from 'node:fs/promises';
import https from 'node:https';

function parseArgs(argv) {
  const opts = { relay: null, cert: null, key: null, home: null, chromium: '/usr/bin/chromium' };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in opts) || i + 1 >= argv.length) {
      console.error('usage: https.mjs --relay URL --cert PEM --key PEM --home DIR [--chromium PATH]');
      process.exit(2);
    }
    opts[key] = argv[i + 1];
  }
  for (const required of ['relay', 'cert', 'key', 'home']) {
    if (!opts[required]) {
      console.error(`https.mjs: --${required} is required`);
      process.exit(2);
    }
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const relay = opts.relay.replace(/\/+$/, '');
const run = Math.random().toString(16).slice(2, 10);
const PARK = 250;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The page: nothing but an origin of its own; the checks run in it.
const PAGE = '<!doctype html><meta charset="utf-8"><title>https check</title><p>https check</p>';
const pages = https.createServer(
  { cert: await readFile(opts.cert), key: await readFile(opts.key) },
  (req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(PAGE);
  },
);
await new Promise((resolve) => pages.listen(0, '127.0.0.1', resolve));
const origin = `https://localhost:${pages.address().port}`;

const browser = await chromium.launch({
  executablePath: opts.chromium,
  headless: true,
  env: { ...process.env, HOME: opts.home },
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
console.log(`browser: Chromium ${browser.version()}; page ${origin}; relay ${relay}`);

let failures = 0;
const diagnostics = [];
async function check(name, fn) {
  diagnostics.length = 0;
  try {
    await fn();
    console.log(`PASS ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}: ${e.message}`);
    for (const line of diagnostics) console.log(`  browser: ${line}`);
  }
}
function eq(actual, expected, what) {
  if (actual !== expected) {
    throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

async function tab() {
  const page = await context.newPage();
  page.on('console', (m) => diagnostics.push(m.text()));
  page.on('pageerror', (e) => diagnostics.push(String(e)));
  const response = await page.goto(`${origin}/`);
  eq(response.status(), 200, 'the page over HTTPS');
  return page;
}

// Starts a fetch in the page; its outcome is kept in window.pending[key].
function start(page, key, url, init = {}) {
  return page.evaluate(([key, url, init]) => {
    window.pending = window.pending || {};
    window.pending[key] = fetch(url, init).then(
      async (r) => ({ status: r.status, body: await r.text() }),
      (e) => ({ error: String(e) }),
    );
  }, [key, url, init]);
}
function outcome(page, key) {
  return page.evaluate((key) => window.pending[key], key);
}
async function fetchIn(page, url, init = {}) {
  await start(page, 'now', url, init);
  return outcome(page, 'now');
}
function ok(r, what) {
  if (!r || r.error) throw new Error(`${what}: the fetch failed in the page: ${r && r.error}`);
  eq(r.status, 200, `${what}: status`);
  return r.body;
}

const context = await browser.newContext();
const a = await tab();
const b = await tab();

await check('the page and the relay are both HTTPS, on two origins', async () => {
  eq(await a.evaluate(() => location.protocol), 'https:', 'the page');
  eq(new URL(relay).protocol, 'https:', 'the relay');
  const health = ok(await fetchIn(a, `${relay}/health`), '/health');
  if (!/^\d+\.\d+\.\d+/.test(health)) throw new Error(`/health said ${health}`);
});

for (const [from, to, name] of [[a, b, 'A to B'], [b, a, 'B to A']]) {
  await check(`link over HTTPS, ${name}`, async () => {
    const url = `${relay}/link/https-${run}-${name.replace(/ /g, '')}`;
    await start(to, 'link', url);
    await sleep(PARK);
    ok(await fetchIn(from, url, { method: 'POST', body: `hello ${name}` }), 'the producer');
    eq(ok(await outcome(to, 'link'), 'the consumer'), `hello ${name}`, 'what arrived');
  });
  await check(`mcast over HTTPS, ${name}`, async () => {
    const url = `${relay}/mcast/https-${run}-${name.replace(/ /g, '')}`;
    ok(await fetchIn(from, url, { method: 'POST', body: `news ${name}` }), 'the publisher');
    eq(ok(await fetchIn(to, url), 'the reader'), `news ${name}`, 'the message read');
  });
}

await check('mcast live stream (EventSource) over HTTPS', async () => {
  const url = `${relay}/mcast/https-live-${run}`;
  await b.evaluate((url) => {
    window.events = [];
    window.source = new EventSource(url);
    window.source.onmessage = (e) => window.events.push(e.data);
    window.opened = new Promise((resolve, reject) => {
      window.source.onopen = resolve;
      window.source.onerror = () => reject(new Error('the stream failed'));
    });
  }, url);
  await b.evaluate(() => window.opened);
  ok(await fetchIn(a, url, { method: 'POST', body: 'live from A' }), 'the publisher');
  const deadline = Date.now() + 10000;
  let events = [];
  while (Date.now() < deadline) {
    events = await b.evaluate(() => window.events);
    if (events.length > 0) break;
    await sleep(50);
  }
  eq(events[0], 'live from A', 'the event');
  await b.evaluate(() => window.source.close());
});

await browser.close();
pages.close();
console.log(failures === 0 ? 'all HTTPS checks passed' : `${failures} HTTPS check(s) failed`);
process.exit(failures === 0 ? 0 : 1);
