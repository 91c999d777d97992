#!/usr/bin/env node
// Real-browser end-to-end checks for the relay: headless Chromium (driven by
// playwright-core) loads pages from one origin and talks to the relay on another.
//
//   node tests/browser/e2e.mjs --relay http://127.0.0.1:8080 --pages http://127.0.0.1:8000 \
//        [--harness URL] [--screenshot target/browser-e2e.png] [--chromium /usr/bin/chromium]
//
// --pages serves examples/ at its root and tests/browser/pages/ under /test/ (the Rust
// test `browser_end_to_end` in tests/relay/browser.rs sets that up). Each check prints
// PASS or FAIL; the exit code is non-zero when any check fails.

import { chromium } from 'playwright-core';
import { readFile, mkdir } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';

function parseArgs(argv) {
  const opts = {
    relay: null,
    pages: null,
    harness: null,
    screenshot: 'target/browser-e2e.png',
    chromium: process.env.HTTPRELAY_CHROMIUM || '/usr/bin/chromium',
    timeout: 30000, // per check, in ms
    only: '', // comma-separated check numbers to run (e.g. "2,6b"); all when empty
  };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in opts) || i + 1 >= argv.length) {
      console.error(`usage: e2e.mjs --relay URL --pages URL [--harness URL] [--screenshot PATH] [--chromium PATH] [--timeout MS] [--only 1,2,6b]`);
      process.exit(2);
    }
    opts[key] = argv[++i];
  }
  if (!opts.relay || !opts.pages) {
    console.error('e2e.mjs: --relay and --pages are required');
    process.exit(2);
  }
  opts.relay = opts.relay.replace(/\/+$/, '');
  opts.pages = opts.pages.replace(/\/+$/, '');
  opts.harness = opts.harness || `${opts.pages}/test/harness.html`;
  opts.timeout = Number(opts.timeout);
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const relay = opts.relay;
const run = randomBytes(4).toString('hex'); // keeps channel names unique per run

class CheckError extends Error {}
function assert(cond, message) {
  if (!cond) throw new CheckError(message);
}
function eq(actual, expected, what) {
  assert(
    JSON.stringify(actual) === JSON.stringify(expected),
    `${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`,
  );
}
// A response as the page saw it must be a plain 200 (or `status`), not a CORS failure.
function ok(r, what, status = 200) {
  assert(r && !r.error, `${what}: fetch failed in the page: ${r && r.error}`);
  assert(r.status === status, `${what}: status ${r.status} (expected ${status}), body ${JSON.stringify(r.body)}`);
  return r;
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// How long to give a request to reach the relay and be parked there.
const PARK = 250;

async function until(what, fn, timeout = 10000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new CheckError(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

// --- a TCP forwarder between the browser and the relay ----------------------------
// Listens on its own port (so pages reach the relay under another origin still) and
// copies bytes both ways. It reads the request heads going to the relay, so a check can
// see which connections carry an event stream (Accept: text/event-stream) and with which
// Last-Event-ID, cut those connections, and hold new connections back until released.
async function startForwarder(target) {
  const upstreamAt = new URL(target);
  const conns = new Set();
  const fwd = {
    requests: [], // every request head seen: { method, target, headers (lower-case names), conn }
    held: false,
    waiting: [], // connections accepted while held
    url: null,
    streams() { return this.requests.filter((r) => /text\/event-stream/i.test(r.headers.accept || '')); },
    hold() { this.held = true; },
    release() {
      this.held = false;
      for (const connect of this.waiting.splice(0)) connect();
    },
    // Cuts every connection that carries an event stream; returns how many.
    cutStreams() {
      let cut = 0;
      for (const conn of conns) {
        if (!conn.stream) continue;
        conn.client.destroy();
        if (conn.upstream) conn.upstream.destroy();
        cut++;
      }
      return cut;
    },
    close() {
      for (const conn of conns) {
        conn.client.destroy();
        if (conn.upstream) conn.upstream.destroy();
      }
      return new Promise((resolve) => server.close(resolve));
    },
  };
  let ids = 0;
  const server = net.createServer((client) => {
    const conn = { id: ++ids, client, upstream: null, pending: [], ended: false, seen: '', parsed: 0, stream: false };
    conns.add(conn);
    const fail = () => {
      client.destroy();
      if (conn.upstream) conn.upstream.destroy();
    };
    client.on('error', fail);
    client.on('close', () => {
      conns.delete(conn);
      if (conn.upstream) conn.upstream.destroy();
    });
    client.on('end', () => {
      conn.ended = true;
      if (conn.upstream) conn.upstream.end();
    });
    client.on('data', (chunk) => {
      // Request heads (bodies may follow them; only heads are looked at).
      conn.seen += chunk.toString('latin1');
      for (;;) {
        const start = conn.seen.slice(conn.parsed).search(/[A-Z]+ \S+ HTTP\/1\.[01]\r\n/);
        if (start < 0) break;
        const from = conn.parsed + start;
        const end = conn.seen.indexOf('\r\n\r\n', from);
        if (end < 0) break;
        const [line, ...fields] = conn.seen.slice(from, end).split('\r\n');
        const [method, target] = line.split(' ');
        const headers = {};
        for (const field of fields) {
          const colon = field.indexOf(':');
          headers[field.slice(0, colon).trim().toLowerCase()] = field.slice(colon + 1).trim();
        }
        fwd.requests.push({ method, target, headers, conn: conn.id });
        if (/text\/event-stream/i.test(headers.accept || '')) conn.stream = true;
        conn.parsed = end + 4;
      }
      if (conn.upstream) conn.upstream.write(chunk);
      else conn.pending.push(chunk);
    });
    const connect = () => {
      if (client.destroyed) return;
      const upstream = net.connect(Number(upstreamAt.port), upstreamAt.hostname);
      conn.upstream = upstream;
      for (const chunk of conn.pending.splice(0)) upstream.write(chunk);
      if (conn.ended) upstream.end();
      upstream.on('data', (chunk) => client.write(chunk));
      upstream.on('end', () => client.end());
      upstream.on('error', fail);
    };
    if (fwd.held) fwd.waiting.push(connect);
    else connect();
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  fwd.url = `http://127.0.0.1:${server.address().port}`;
  return fwd;
}

// --- browser plumbing -------------------------------------------------------------

const browser = await chromium.launch({
  executablePath: opts.chromium,
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
console.log(`browser: Chromium ${browser.version()} (${opts.chromium})`);
console.log(`relay:   ${relay}`);
console.log(`pages:   ${opts.pages} (harness ${opts.harness})`);

// Everything the browser said during the current check, shown when it fails (this is
// where Chromium's "blocked by CORS policy" explanations end up).
let diagnostics = [];
const contexts = [];

async function newContext() {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 760, height: 720 } });
  contexts.push(context);
  context.on('page', (page) => watch(page));
  return context;
}

function watch(page) {
  const tag = () => {
    try { return new URL(page.url()).pathname.split('/').pop() || page.url(); } catch { return '?'; }
  };
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') diagnostics.push(`[${tag()} console.${m.type()}] ${m.text()}`);
  });
  page.on('pageerror', (e) => diagnostics.push(`[${tag()} pageerror] ${e.message}`));
  page.on('requestfailed', (req) => {
    const reason = req.failure() ? req.failure().errorText : '?';
    if (reason !== 'net::ERR_ABORTED') diagnostics.push(`[${tag()} requestfailed] ${req.method()} ${req.url()}: ${reason}`);
  });
}

async function harness(context) {
  const page = await context.newPage();
  const response = await page.goto(opts.harness);
  assert(response && response.ok(), `harness page ${opts.harness} did not load (${response && response.status()})`);
  return page;
}

// An example page; `via` is the relay address the page is given (the relay itself, or
// a forwarder in front of it).
async function example(context, name, query, via = relay) {
  const page = await context.newPage();
  const url = `${opts.pages}/${name}?relay=${encodeURIComponent(via)}&${new URLSearchParams(query)}`;
  const response = await page.goto(url);
  assert(response && response.ok(), `${url} did not load (${response && response.status()})`);
  return page;
}

// page.evaluate shorthands for the harness functions.
const pfetch = (page, url, init = {}) => page.evaluate(([u, i]) => window.relayFetch(u, i), [url, init]);
const pstart = (page, key, url, init = {}) => page.evaluate(([k, u, i]) => window.start(k, u, i), [key, url, init]);
const presult = (page, key) => page.evaluate((k) => window.result(k), key);

let passed = 0;
const failed = [];

const only = opts.only ? opts.only.split(',') : null;

async function check(name, fn) {
  if (only && !only.includes(name.split(' ')[0])) return;
  diagnostics = [];
  const started = Date.now();
  let timer;
  try {
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new CheckError(`check took longer than ${opts.timeout} ms`)), opts.timeout);
      }),
    ]);
    console.log(`PASS ${name} (${Date.now() - started} ms)`);
    passed++;
  } catch (e) {
    console.log(`FAIL ${name} (${Date.now() - started} ms): ${e instanceof CheckError ? e.message : e.stack}`);
    for (const line of diagnostics) console.log(`     ${line}`);
    failed.push(name);
  } finally {
    clearTimeout(timer);
    // Close this check's tabs so their pending long polls do not linger.
    for (const context of contexts.splice(0)) await context.close().catch(() => {});
  }
}

// --- the checks -------------------------------------------------------------------

await check('1 link: both directions between two pages, consumer query back in HttpRelay-Query', async () => {
  const context = await newContext();
  const a = await harness(context);
  const b = await harness(context);

  // A produces first and waits; B consumes with a query (wsecret and seqid are dropped).
  const ch1 = `${relay}/link/${run}-ab`;
  const text = 'héllo from A ✓ (link)';
  await pstart(a, 'p', ch1, { method: 'POST', headers: { 'Content-Type': 'text/plain; charset=utf-8' }, body: text });
  await sleep(PARK);
  const got = ok(await pfetch(b, `${ch1}?reply=yes&from=B&wsecret=hidden&SeqId=3`), 'B consuming');
  eq(got.body, text, 'B received body');
  eq(got.headers['content-type'], 'text/plain; charset=utf-8', 'B sees the producer Content-Type');
  eq(got.headers['httprelay-method'], 'POST', 'B sees HttpRelay-Method');
  assert(got.headers['x-real-ip'], `B cannot read X-Real-IP (visible headers: ${got.visible})`);
  const sent = ok(await presult(a, 'p'), 'A producing');
  eq(sent.body, '', 'A producer body');
  eq(sent.headers['httprelay-query'], 'from=B&reply=yes', 'A reads the consumer query via headers.get("HttpRelay-Query")');
  eq(sent.headers['httprelay-method'], 'GET', 'A sees the consumer method');

  // Reversed: A consumes first and waits; B produces (PUT, binary-ish JSON).
  const ch2 = `${relay}/link/${run}-ba`;
  const json = JSON.stringify({ from: 'B', n: [1, 2, 3] });
  await pstart(a, 'c', `${ch2}?from=A`);
  await sleep(PARK);
  const put = ok(await pfetch(b, ch2, { method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: json }), 'B producing');
  eq(put.headers['httprelay-query'], 'from=A', 'B reads the consumer query');
  const recv = ok(await presult(a, 'c'), 'A consuming');
  eq(recv.body, json, 'A received body');
  eq(recv.headers['content-type'], 'application/json', 'A sees Content-Type');
  eq(recv.headers['httprelay-method'], 'PUT', 'A sees HttpRelay-Method');
  eq(recv.headers['content-length'], String(Buffer.byteLength(json)), 'A sees Content-Length');
});

await check('2 mcast: 20 messages in order to two tabs following with seqid and credentials: include', async () => {
  const context = await newContext();
  const t1 = await harness(context);
  const t2 = await harness(context);
  const producer = await harness(context);
  const url = `${relay}/mcast/${run}-room`;

  // Both tabs start following before anything is posted: message 0 is waited for.
  const follow = (page) => page.evaluate((u) => window.follow(u, 0, 20, 'include'), url);
  const f1 = follow(t1);
  const f2 = follow(t2);
  await sleep(PARK);
  for (let i = 0; i < 20; i++) {
    const r = ok(await pfetch(producer, url, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: `message ${i}` }), `POST ${i}`);
    eq(r.headers['httprelay-seqid'], String(i), `HttpRelay-SeqId of POST ${i}`);
  }
  const expected = [...Array(20).keys()].map((i) => ({ seq: i, body: `message ${i}` }));
  for (const [name, f] of [['tab 1', f1], ['tab 2', f2]]) {
    const r = await f;
    assert(!r.last, `${name} stopped after ${r.got.length} messages: ${JSON.stringify(r.last)}`);
    eq(r.got, expected, `${name} messages`);
  }

  // The SeqId cookie: every reader response sets `SeqId=n+1` for the channel's path and
  // the browser sends it back with credentials: 'include'. A fresh browser context (its
  // own cookie jar and cache; in the shared one the two tabs' cookie writes race, and a
  // response served from the HTTP cache sets no cookie) reads message 19 by seqid, then
  // asks without seqid: the cookie (SeqId=20) picks message 20, not the newest (21).
  for (const i of [20, 21]) {
    ok(await pfetch(producer, url, { method: 'POST', body: `message ${i}` }), `POST ${i}`);
  }
  const other = await harness(await newContext());
  ok(await pfetch(other, `${url}?seqid=19`, { credentials: 'include' }), 'GET seqid=19 in a fresh context');
  const byCookie = ok(await pfetch(other, url, { credentials: 'include' }), 'GET by cookie');
  eq([byCookie.headers['httprelay-seqid'], byCookie.body], ['20', 'message 20'], 'GET without seqid, with the SeqId cookie');
  const noCookie = ok(await pfetch(other, url, { credentials: 'omit' }), 'GET without cookie');
  eq([noCookie.headers['httprelay-seqid'], noCookie.body], ['21', 'message 21'], 'GET without seqid or cookie (newest)');
});

await check('3 sync: two pages swap bodies', async () => {
  const context = await newContext();
  const a = await harness(context);
  const b = await harness(context);
  const url = `${relay}/sync/${run}-pair`;
  await pstart(a, 's', url, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: 'from A' });
  await sleep(PARK);
  const rb = ok(await pfetch(b, `${url}?side=b`, { method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: '"from B"' }), 'B');
  const ra = ok(await presult(a, 's'), 'A');
  eq(rb.body, 'from A', 'B got A body');
  eq(rb.headers['content-type'], 'text/plain', 'B sees A Content-Type');
  eq(rb.headers['httprelay-method'], 'POST', 'B sees A method');
  eq(ra.body, '"from B"', 'A got B body');
  eq(ra.headers['content-type'], 'application/json', 'A sees B Content-Type');
  eq(ra.headers['httprelay-method'], 'PUT', 'A sees B method');
  eq(ra.headers['httprelay-query'], 'side=b', 'A sees B query');
});

await check('4 proxy: the page SERVEs in a loop, a client outside the browser gets its answers', async () => {
  const context = await newContext();
  const page = await harness(context);
  const id = `${run}-srv`;
  await page.evaluate((u) => window.serveLoop(u), `${relay}/proxy/${id}`);
  await sleep(PARK);
  // The client is node's own fetch: not a browser, no CORS, like curl.
  const answers = [];
  for (const [method, target, body] of [['POST', '/items/7?color=red&n=1', 'ping'], ['GET', '', undefined]]) {
    const response = await fetch(`${relay}/proxy/${id}${target}`, {
      method,
      headers: { 'X-Client': 'node', ...(body ? { 'Content-Type': 'text/plain' } : {}) },
      body,
      signal: AbortSignal.timeout(10000),
    });
    answers.push({
      status: response.status,
      answer: response.headers.get('x-answer'),
      type: response.headers.get('content-type'),
      body: await response.text(),
    });
  }
  const state = await page.evaluate(() => window.serveStop());
  assert(!state.error, `the page's SERVE loop failed: ${state.error}`);
  eq(state.jobs, 2, 'jobs served by the page');
  const first = answers[0];
  eq([first.status, first.answer, first.type], [201, 'job-1', 'application/json'], 'first client response status, X-Answer, Content-Type');
  eq(JSON.parse(first.body), { method: 'POST', path: '/items/7', query: 'color=red&n=1', client: 'node', body: 'ping' }, 'first client response body (what the page saw)');
  const second = answers[1];
  eq([second.status, second.answer], [201, 'job-2'], 'second client response status, X-Answer');
  eq(JSON.parse(second.body), { method: 'GET', path: '/', query: '', client: 'node', body: '' }, 'second client response body');
});

await check('5 wsecret: HttpRelay-WSecret header through the preflight, wrong secret 401 readable', async () => {
  const context = await newContext();
  const page = await harness(context);
  const mcast = `${relay}/mcast/${run}-secret`;
  const post = (secret, body) => pfetch(page, mcast, {
    method: 'POST', headers: { 'HttpRelay-WSecret': secret, 'Content-Type': 'text/plain' }, body,
  });
  ok(await post('s3cret', 'claimed'), 'first writer with HttpRelay-WSecret (claims the channel)');
  const wrong = await post('wrong', 'intruder');
  ok(wrong, 'writer with a wrong secret', 401);
  assert(wrong.body.startsWith('401'), `401 body: ${JSON.stringify(wrong.body)}`);
  ok(await post('s3cret', 'again'), 'writer with the right secret');
  const read = ok(await pfetch(page, `${mcast}?seqid=1`), 'reader');
  eq(read.body, 'again', 'the reader sees the second good message');

  // link: producer with the header secret is matched; a wrong one is refused at once.
  const link = `${relay}/link/${run}-secret`;
  await pstart(page, 'p', link, { method: 'POST', headers: { 'HttpRelay-WSecret': 'k' }, body: 'secret-held' });
  await sleep(PARK);
  const page2 = await harness(context);
  eq(ok(await pfetch(page2, link), 'link consumer').body, 'secret-held', 'link consumer body');
  ok(await presult(page, 'p'), 'link producer with secret');
  const refused = await pfetch(page2, link, { method: 'POST', headers: { 'HttpRelay-WSecret': 'nope' }, body: 'x' });
  ok(refused, 'link producer with a wrong secret', 401);
});

let screenshotTaken = null;

await check('6a example message.html: send in one tab, receive in another', async () => {
  const context = await newContext();
  const channel = `${run}-msg`;
  const alice = await example(context, 'message.html', { channel, name: 'alice' });
  const bob = await example(context, 'message.html', { channel, name: 'bob' });
  await alice.fill('#text', 'Hi Bob, this went through the relay.');
  await alice.click('#send');
  await sleep(PARK);
  await bob.click('#receive');
  await bob.waitForFunction(() => document.getElementById('received').textContent.length > 0);
  eq(await bob.textContent('#received'), 'Hi Bob, this went through the relay.', 'bob received');
  eq(await bob.textContent('#meta tr[data-header="httprelay-method"] td:last-child'), 'POST', 'bob sees the metadata table');
  await alice.waitForFunction(() => document.getElementById('status').textContent.startsWith('delivered'));
  eq(await alice.textContent('#status'), 'delivered (receiver said: from=bob)', 'alice status');
});

// paint.html, following the room with a request per message (mode 'fetch', the
// default) or with one EventSource stream (mode 'sse').
async function paintCheck(mode) {
  const context = await newContext();
  const room = `${run}-paint-${mode}`;
  const painter = await example(context, 'paint.html', { room, mode });
  const viewer = await example(context, 'paint.html', { room, mode });
  for (const page of [painter, viewer]) eq(await page.inputValue('#mode'), mode, 'the mode picked by ?mode=');
  if (mode === 'sse') {
    await until('both tabs to open their EventSource', async () =>
      (await painter.evaluate(() => window.paintState.opens)) >= 1 && (await viewer.evaluate(() => window.paintState.opens)) >= 1);
  } else {
    await sleep(PARK);
  }
  // Input goes to the foreground tab; a background tab gets about one frame a second.
  await painter.bringToFront();
  const box = await painter.locator('#canvas').boundingBox();
  const strokes = [
    { color: '#d62728', f: (t) => [0.08 + 0.84 * t, 0.5 + 0.3 * Math.sin(t * 4 * Math.PI)] },
    { color: '#1f77b4', f: (t) => [0.5 + 0.3 * Math.cos(t * 2 * Math.PI), 0.5 + 0.38 * Math.sin(t * 2 * Math.PI)] },
    { color: '#2ca02c', f: (t) => [0.15 + 0.7 * t, 0.15 + 0.1 * t] },
  ];
  for (const { color, f } of strokes) {
    await painter.evaluate((c) => { document.getElementById('color').value = c; }, color);
    const at = (t) => { const [x, y] = f(t); return [box.x + x * box.width, box.y + y * box.height]; };
    await painter.mouse.move(...at(0));
    await painter.mouse.down();
    for (let i = 1; i <= 60; i++) await painter.mouse.move(...at(i / 60));
    await painter.mouse.up();
  }
  // 3 strokes of 61 points go out in pieces of at most 40 points: 2 messages each.
  await until('the viewer to receive 6 stroke messages', () => viewer.evaluate(() => window.paintState.fromOthers >= 6));
  // The painter follows the room too: its last POST answer and its own last stroke
  // coming back may still be on their way.
  await until('the painter to see its 6 POSTs answered and come back',
    () => painter.evaluate(() => window.paintState.sent >= 6 && window.paintState.received >= 6));
  const state = await painter.evaluate(() => window.paintState);
  assert(!state.error, `painter error: ${state.error}`);
  eq([state.sent, state.received, state.fromOthers], [6, 6, 0], 'painter sent, received, fromOthers');
  // A pixel on the red wave (t = 0.125, the crest) is painted in the viewer.
  const pixel = await viewer.evaluate(() => {
    const c = document.getElementById('canvas');
    const [x, y] = [(0.08 + 0.84 * 0.125) * c.width, 0.8 * c.height];
    return [...c.getContext('2d').getImageData(Math.round(x), Math.round(y), 1, 1).data];
  });
  assert(pixel[3] > 0 && pixel[0] > 150 && pixel[2] < 120, `viewer pixel on the red stroke is ${pixel}`);
  // A tab that joins late replays the room from seqid 0.
  const late = await example(context, 'paint.html', { room, mode });
  await until('the late tab to replay 6 messages', () => late.evaluate(() => window.paintState.fromOthers >= 6));
  if (mode === 'sse') {
    for (const [name, page] of [['painter', painter], ['viewer', viewer], ['late tab', late]]) {
      const s = await page.evaluate(() => window.paintState);
      eq([s.mode, s.opens, s.errors, s.duplicates, s.skipped, s.nextSeq], ['sse', 1, 0, 0, 0, 6],
        `${name} mode, opens, errors, duplicates, skipped, nextSeq`);
    }
    return;
  }
  await mkdir(path.dirname(path.resolve(opts.screenshot)), { recursive: true });
  await viewer.screenshot({ path: opts.screenshot, fullPage: true });
  screenshotTaken = path.resolve(opts.screenshot);
}

await check('6b example paint.html: strokes from one tab appear in the others', () => paintCheck('fetch'));

await check('6c example file.html: send a file from one tab, receive and download it in another', async () => {
  const context = await newContext();
  const channel = `${run}-file`;
  const sender = await example(context, 'file.html', { channel });
  const receiver = await example(context, 'file.html', { channel });
  const content = randomBytes(2 * 1024 * 1024);
  await sender.setInputFiles('#file', { name: 'relay test.bin', mimeType: 'application/octet-stream', buffer: content });
  await receiver.click('#receive');
  await sleep(PARK);
  await sender.click('#send');
  await receiver.waitForSelector('#download:not([hidden])');
  const [download] = await Promise.all([receiver.waitForEvent('download'), receiver.click('#download')]);
  eq(download.suggestedFilename(), 'relay test.bin', 'downloaded file name');
  const saved = await readFile(await download.path());
  assert(saved.equals(content), `downloaded ${saved.length} bytes differ from the ${content.length} sent`);
  await sender.waitForFunction(() => document.getElementById('send-status').textContent.startsWith('sent '));
  eq(await receiver.textContent('#receive-status'), `received relay test.bin (${content.length} bytes)`, 'receiver status');
});

await check('6d example paint.html?mode=sse: the same over EventSource streams', () => paintCheck('sse'));

await check('7 abort: a waiting consumer that the page aborts is never matched', async () => {
  const context = await newContext();
  const a = await harness(context);
  const b = await harness(context);
  const url = `${relay}/link/${run}-abort`;
  await a.evaluate((u) => window.startAbortable('gone', `${u}?who=A`, {}), url);
  await sleep(PARK);
  const aborted = await a.evaluate(() => window.abort('gone'));
  assert(aborted.error && aborted.error.startsWith('AbortError'), `the aborted fetch: ${JSON.stringify(aborted)}`);
  await sleep(PARK); // the relay sees the closed connection
  await pstart(b, 'p', url, { method: 'POST', body: 'for whoever is still there' });
  await sleep(PARK);
  const got = ok(await pfetch(a, `${url}?who=C`), 'the next consumer');
  eq(got.body, 'for whoever is still there', 'the next consumer body');
  eq(ok(await presult(b, 'p'), 'producer').headers['httprelay-query'], 'who=C', 'the producer was matched with');
});

await check('8 piping: the relay\'s send page and its no-script form deliver to a receiving tab', async () => {
  const context = await newContext();
  const receiver = await harness(context);
  // The page with script, in text mode.
  const typed = `${run}-piping-page`;
  await pstart(receiver, 'page', `${relay}/${typed}`);
  await sleep(PARK);
  const sender = await context.newPage();
  const loaded = await sender.goto(`${relay}/`);
  assert(loaded && loaded.ok(), `the send page did not load (${loaded && loaded.status()})`);
  await sender.check('#text_mode');
  await sender.fill('#text_input', 'typed in the page');
  await sender.fill('#path', typed);
  await sender.click('#send');
  eq(ok(await presult(receiver, 'page'), 'receiving tab').body, 'typed in the page', 'text from the send page');
  await sender.waitForFunction(() => document.body.dataset.sent === '200');
  const log = await sender.textContent('#log');
  assert(log.includes('[INFO] All receiver(s) was/were received successfully.'), `the send page shows: ${log}`);
  // The form without script: its CSP allows no script and the style by nonce.
  const formed = `${run}-piping-form`;
  await pstart(receiver, 'form', `${relay}/${formed}`);
  await sleep(PARK);
  const form = await context.newPage();
  const page = await form.goto(`${relay}/noscript?path=${formed}&mode=text`);
  const policy = page.headers()['content-security-policy'] || '';
  assert(policy.startsWith("default-src 'none'; style-src 'nonce-"), `the form page's policy: ${policy}`);
  const styled = await form.evaluate(() => getComputedStyle(document.body).maxWidth);
  // The page's style sets max-width: 40em (16 px type); refused, it would be 'none'.
  eq(styled, '640px', 'the nonce lets the page style apply under its policy');
  await form.fill('textarea[name=input_text]', 'sent without script');
  await Promise.all([form.waitForLoadState('load'), form.click('form[method=POST] button[type=submit]')]);
  eq(ok(await presult(receiver, 'form'), 'receiving tab').body, 'sent without script', 'text from the form');
  await form.waitForFunction(() => document.body.innerText.includes('All receiver(s) was/were received successfully.'));
});

await check('9 sse: EventSource in three tabs follows 50 messages across origins, in order, exactly once, through a cut that resumes with Last-Event-ID', async () => {
  // The tabs (two of the harness, message.html and paint.html in EventSource mode)
  // reach the relay through a forwarder (its own port: another origin than the
  // pages, as the relay is), which cuts every stream after 25 messages and holds the
  // reconnections back while 13 more messages are posted: only a reconnection that
  // resumes from Last-Event-ID can see those.
  const fwd = await startForwarder(relay);
  try {
    const context = await newContext();
    const channel = `${run}-sse`;
    const stream = `${fwd.url}/mcast/${channel}`;
    const tabs = [];
    for (const name of ['harness tab 1', 'harness tab 2']) {
      const page = await harness(context);
      await page.evaluate((u) => window.sseFollow('s', u), stream);
      tabs.push({ name, page, state: () => page.evaluate(() => window.sseState('s')) });
    }
    // The example page in EventSource mode, relay address = the forwarder.
    const chat = await example(context, 'message.html', { channel, mode: 'sse', name: 'chat' }, fwd.url);
    tabs.push({ name: 'message.html?mode=sse', page: chat, state: () => chat.evaluate(() => window.messageState) });
    // paint.html in EventSource mode follows the same channel (from ?seqid=0): none of
    // these messages is a stroke, but it must come through the cut at the right place.
    const paint = await example(context, 'paint.html', { room: channel, mode: 'sse' }, fwd.url);
    const paintState = () => paint.evaluate(() => window.paintState);
    const states = () => Promise.all(tabs.map((t) => t.state()));
    // The ids a tab got, as runs ("0-24 25-37 0-12" shows a reconnect that started over).
    const runs = (events) => {
      const out = [];
      for (const e of events) {
        const n = Number(e.id);
        const run = out[out.length - 1];
        if (run && n === run[1] + 1) run[1] = n;
        else out.push([n, n]);
      }
      return out.map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(' ') || 'none';
    };
    const all = async (what, test) => {
      try {
        return await until(what, async () => (await states()).every(test));
      } catch (e) {
        const now = await states();
        const got = tabs.map((t, i) => `${t.name}: ids ${runs(now[i].events)}, opens ${now[i].opens}, errors ${now[i].errors}`);
        throw new CheckError(`${e.message}; ${got.join('; ')}`);
      }
    };
    await all('every tab to open its EventSource', (st) => st.opens >= 1);
    await until('paint.html to open its EventSource', async () => (await paintState()).opens >= 1);
    eq(fwd.streams().length, 4, 'stream requests through the forwarder');
    for (const r of fwd.streams()) {
      eq(r.headers.origin, opts.pages, 'the stream request\'s Origin (the pages, not the relay)');
      assert(r.headers['last-event-id'] === undefined, `a first stream request carries Last-Event-ID ${r.headers['last-event-id']}`);
    }

    // Messages: mostly text; some with line breaks (event.data), some that are not
    // UTF-8 text without CR (an `event: base64`), on both sides of the cut.
    const binary = (n) => Buffer.concat([Buffer.from([0x00, 0xff, 0xfe, 0x0d, 0x0a, 0x80]), randomBytes(n)]);
    const special = {
      3: 'two lines\nand a third after an empty one\n\nthe end',
      7: binary(200),
      11: ' a leading space, and a trailing line break\n',
      13: 'CRLF line ends\r\ngo as base64\r\n',
      17: '',
      19: 'héllo ✓ 🚀',
      29: 'sent while the tabs were cut off\nsecond line',
      33: binary(5),
      41: '\n\nonly line breaks around\n\n',
    };
    const bodies = [...Array(50).keys()].map((i) => Buffer.from(special[i] ?? `message ${i}`));
    const seqids = [];
    const post = async (i) => {
      const response = await fetch(`${relay}/mcast/${channel}`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/octet-stream' },
        body: bodies[i],
        signal: AbortSignal.timeout(10000),
      });
      await response.arrayBuffer();
      eq(response.status, 200, `POST ${i} status`);
      seqids.push(response.headers.get('httprelay-seqid'));
    };
    const got = (n) => (st) => st.events.length >= n;

    for (let i = 0; i < 25; i++) await post(i);
    await all('every tab to receive 25 messages', got(25));
    await until('paint.html to receive 25 messages', async () => (await paintState()).nextSeq >= 25);

    // The cut: every stream connection at once; reconnections wait.
    fwd.hold();
    eq(fwd.cutStreams(), 4, 'stream connections cut');
    await all('every tab to see its stream fail', (st) => st.errors >= 1);
    await until('paint.html to see its stream fail', async () => (await paintState()).errors >= 1);
    for (let i = 25; i < 38; i++) await post(i);
    fwd.release();
    await all('every tab to reconnect', (st) => st.opens >= 2);
    await until('paint.html to reconnect', async () => (await paintState()).opens >= 2);
    const resumed = fwd.streams().slice(4);
    eq(resumed.length, 4, 'reconnections through the forwarder');
    for (const r of resumed) {
      eq(r.headers['last-event-id'], seqids[24], 'Last-Event-ID of a reconnection');
      eq(r.headers.origin, opts.pages, 'the Origin of a reconnection');
    }
    for (let i = 38; i < 50; i++) await post(i);
    await all('every tab to receive 50 messages', got(50));

    // One more, sent with the page's own Send button (a POST through the forwarder): it
    // comes after everything else on every stream, so once it is there any duplicate
    // of the 50 would be too.
    const last = 'the last one,\nsent from message.html';
    await chat.fill('#text', last);
    await chat.click('#send');
    await all('every tab to receive the page\'s message', got(51));
    await until('paint.html to receive the page\'s message', async () => (await paintState()).nextSeq >= 51);
    const sentAs = (await chat.textContent('#status')).replace('sent as message ', '');
    eq(sentAs, String(Number(seqids[49]) + 1), 'the SeqId message.html reports for its POST');

    eq(seqids, [...Array(50).keys()].map(String), 'HttpRelay-SeqId of the 50 POSTs');
    const text = (b) => { try { return b.includes(0x0d) ? null : new TextDecoder('utf-8', { fatal: true }).decode(b); } catch { return null; } };
    const expected = [...bodies, Buffer.from(last)].map((b, i) => {
      const t = text(b);
      return t === null ? { type: 'base64', id: String(i), data: b.toString('hex') } : { type: 'message', id: String(i), data: t };
    });
    const finals = await states();
    tabs.forEach((tab, i) => {
      const st = finals[i];
      const seen = st.events.map((e) => ({
        type: e.type,
        id: e.id,
        data: e.type === 'base64' ? Buffer.from(e.data, 'base64').toString('hex') : e.data,
      }));
      eq(seen.map((e) => e.id), expected.map((e) => e.id), `${tab.name}: the ids, in order, each once`);
      eq(seen, expected, `${tab.name}: every event's type and data`);
      eq([st.opens, st.errors], [2, 1], `${tab.name}: opens and errors (one cut, one reconnect)`);
    });
    // The harness decodes base64 with atob in the page: the bytes are the same.
    for (const tab of tabs.slice(0, 2)) {
      const st = await tab.state();
      const decoded = st.events.filter((e) => e.type === 'base64').map((e) => e.hex);
      eq(decoded, expected.filter((e) => e.type === 'base64').map((e) => e.data), `${tab.name}: base64 decoded by atob`);
      eq(st.readyState, 1, `${tab.name}: EventSource readyState (OPEN)`);
    }
    // What the example page shows: each message as its own list item.
    eq(await chat.textContent('#history li[data-id="3"]'), special[3], 'message.html shows the lines of message 3');
    eq(await chat.textContent('#history li[data-id="13"]'), special[13], 'message.html shows message 13 decoded from base64');
    assert((await chat.textContent('#history li[data-id="7"]')).startsWith('(206 bytes of binary: 00 ff fe 0d 0a 80'),
      `message.html shows binary message 7 as ${await chat.textContent('#history li[data-id="7"]')}`);
    eq(await chat.textContent('#stream'), '(connected again; reconnects: 1)', 'message.html stream status');
    const painted = await paintState();
    // Its stream asks for ?seqid=0, yet its reconnection resumes after the last
    // message it had: Last-Event-ID comes before seqid, so nothing comes twice.
    eq([painted.nextSeq, painted.opens, painted.reconnects, painted.errors, painted.skipped, painted.duplicates, painted.error],
      [51, 2, 1, 1, 0, 0, ''], 'paint.html nextSeq, opens, reconnects, errors, skipped, duplicates, error');
    eq(fwd.requests.filter((r) => r.method === 'OPTIONS').length, 0, 'CORS preflights through the forwarder');
  } finally {
    await fwd.close();
  }
});

await check('10 inbox: a message waits for its reader in another tab, is read twice, acknowledged with DELETE through the preflight, and the writer hears of it', async () => {
  const context = await newContext();
  const writer = await harness(context);
  const reader = await harness(context);
  const url = `${relay}/inbox/${run}-box`;
  // The reader asks first: it waits for the message.
  await pstart(reader, 'r', url);
  await sleep(PARK);
  ok(await pfetch(writer, url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"token":1}' }), 'POST');
  const first = ok(await presult(reader, 'r'), 'waiting GET');
  eq([first.body, first.headers['content-type']], ['{"token":1}', 'application/json'], 'the message and its type');
  eq(ok(await pfetch(reader, url), 'second GET').body, '{"token":1}', 'a read does not consume it');
  eq(ok(await pfetch(writer, `${url}/ack`), 'ack').body, 'false', 'not acknowledged yet');
  await pstart(writer, 'w', `${url}/await`);
  await sleep(PARK);
  ok(await pfetch(reader, url, { method: 'DELETE' }), 'DELETE (preflighted)');
  ok(await presult(writer, 'w'), 'the writer\'s await ends 200');
  eq(ok(await pfetch(writer, `${url}/ack`), 'ack after').body, 'true', 'acknowledged');
  const unknown = ok(await pfetch(reader, `${relay}/inbox/${run}-none/ack`), 'unknown inbox', 404);
  eq(unknown.body, 'Not found', 'a 404 the page can read');
});

await browser.close();
if (screenshotTaken) console.log(`screenshot: ${screenshotTaken}`);
const total = passed + failed.length;
console.log(`browser e2e: ${passed} of ${total} checks passed` + (failed.length ? `; FAILED: ${failed.join('; ')}` : ''));
process.exit(failed.length ? 1 : 0);
