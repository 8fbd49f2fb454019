// Drives the gateway's playground page in a real browser: Debian's chromium
// (CHROMIUM, default /usr/bin/chromium) through playwright-core, against a
// gateway on the built-in emulator (the binary in SPEECHGATE_BIN, or one
// built from the checkout). It keeps screenshots of what it saw: SCREENSHOT
// (default screenshot.png here) once speech has played with its word
// timings, and the same name with -end once every test has run.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import readline from 'node:readline';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../../..');
const screenshot = process.env.SCREENSHOT || path.join(here, '..', 'screenshot.png');

let gateway;
let base;
let dir;
let browser;
let page;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'speechgate-browser-'));
  let bin = process.env.SPEECHGATE_BIN;
  if (!bin) {
    bin = path.join(dir, 'speechgate');
    await promisify(execFile)('go', ['build', '-o', bin, './cmd/speechgate'], { cwd: repo });
  }
  gateway = spawn(bin, ['--upstream=emulator', '--grpc-addr=127.0.0.1:0', '--http-addr=127.0.0.1:0', '--admin-addr='], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  process.once('exit', () => gateway.kill('SIGKILL'));
  base = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the gateway did not start within 120 s')), 120_000);
    readline.createInterface({ input: gateway.stderr }).on('line', (line) => {
      try {
        const entry = JSON.parse(line);
        if (entry.msg === 'serving HTTP') {
          clearTimeout(timer);
          resolve(`http://${entry.addr}`);
        }
      } catch {
        // not a log line
      }
    });
    gateway.on('exit', (code) => reject(new Error(`the gateway exited with ${code}`)));
  });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--autoplay-policy=no-user-gesture-required', '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream', '--no-sandbox'],
  });
  page = await browser.newPage();
  page.on('pageerror', (err) => console.error('page error:', err));
});

after(async () => {
  if (page) await page.screenshot({ path: screenshot.replace(/\.png$/, '-end.png'), fullPage: true }).catch(() => {});
  await browser?.close();
  const exited = new Promise((resolve) => gateway.once('exit', resolve));
  gateway.kill('SIGTERM');
  await exited;
  await rm(dir, { recursive: true, force: true });
});

describe('the playground page', () => {
  it('loads, with the voice catalog', async () => {
    await page.goto(`${base}/playground/`);
    await page.waitForFunction(() => window.playground.voices > 0);
    assert.ok(await page.locator('#voice option').count() > 0);
  });

  it('synthesizes and plays the audio as it arrives', async () => {
    await page.selectOption('#voice', 'avery');
    await page.fill('#text', 'The playground plays this while it is made.');
    await page.click('#speak');
    await page.waitForFunction(() => /done/.test(document.getElementById('synth-status').textContent));
    const state = await page.evaluate(() => window.playground);
    // 43 characters at 60 ms each, at 24 kHz.
    assert.equal(state.samplesPlayed, 43 * 60 * 24);
    assert.ok(state.ttfaMs !== null && state.ttfaMs >= 0, 'the time to first audio is shown');
  });

  it('streams text over the WebSocket bridge, with word timings', async () => {
    await page.click('#speak-stream');
    await page.waitForFunction(() => /words/.test(document.getElementById('synth-status').textContent));
    const words = await page.evaluate(() => window.playground.words.map((w) => w.word));
    assert.deepEqual(words, ['The', 'playground', 'plays', 'this', 'while', 'it', 'is', 'made.']);
    await page.screenshot({ path: screenshot, fullPage: true });
  });

  it('transcribes a file that the gateway synthesized', async () => {
    const text = 'Browsers can transcribe files.';
    const resp = await fetch(`${base}/v1/speech:synthesize`, {
      method: 'POST',
      headers: { authorization: 'Bearer any-key' },
      body: JSON.stringify({ text, voice_id: 'avery', sample_rate_hz: 16000 }),
    });
    assert.equal(resp.status, 200);
    const file = path.join(dir, 'speech.wav');
    await writeFile(file, Buffer.from(await resp.arrayBuffer()));
    await page.setInputFiles('#file', file);
    await page.waitForFunction(() => window.playground.transcript !== '');
    assert.equal(await page.evaluate(() => window.playground.transcript), text);
    assert.equal(await page.locator('#file-words tbody tr').count(), 4);
  });

  it('listens to the microphone (a fake one) and transcribes live', async () => {
    await page.click('#listen');
    await page.waitForFunction(() => document.getElementById('interim').textContent !== '' || window.playground.finals.length > 0);
    await page.click('#listen'); // stop: the session ends with its last transcript
    await page.waitForFunction(() => window.playground.finals.length > 0);
    assert.ok((await page.textContent('#final')).length > 0);
  });

  it('shows an error with its code and advice', async () => {
    await page.fill('#text', '');
    await page.click('#speak');
    await page.waitForFunction(() => !document.getElementById('errors').hidden);
    const shown = await page.textContent('#error');
    assert.match(shown, /INVALID_ARGUMENT/);
    assert.match(shown, /fix text:/);
  });
});
