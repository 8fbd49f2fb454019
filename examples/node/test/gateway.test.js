// Runs the Node client against a real gateway on the built-in emulator.
// The gateway is the binary in SPEECHGATE_BIN (what .ci/run builds), or one
// built from the checkout first: the suite signals the gateway itself, and
// `go run` would not pass a SIGTERM on to it.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import readline from 'node:readline';

import { connect, connectCall, converseWav, errorDetails, synthesizeToWav, transcribeFile } from '../speechgate.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

let gateway;
let address;
let httpBase;
let dir;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'speechgate-node-'));
  let bin = process.env.SPEECHGATE_BIN;
  if (!bin) {
    bin = path.join(dir, 'speechgate');
    await promisify(execFile)('go', ['build', '-o', bin, './cmd/speechgate'], { cwd: repo });
  }
  const args = ['--upstream=emulator', '--grpc-addr=127.0.0.1:0', '--admin-addr=', '--http-addr=127.0.0.1:0'];
  gateway = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  // Whatever happens to the suite, the gateway does not outlive it.
  process.once('exit', () => gateway.kill('SIGKILL'));
  address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the gateway did not start within 120 s')), 120_000);
    readline.createInterface({ input: gateway.stderr }).on('line', (line) => {
      try {
        const entry = JSON.parse(line);
        if (entry.msg === 'serving gRPC') address = entry.addr;
        if (entry.msg === 'serving HTTP') httpBase = `http://${entry.addr}`;
        if (address && httpBase) {
          clearTimeout(timer);
          resolve(address);
        }
      } catch {
        // not a log line
      }
    });
    gateway.on('exit', (code) => reject(new Error(`the gateway exited with ${code}`)));
  });
});

after(async () => {
  const exited = new Promise((resolve) => gateway.once('exit', (code, signal) => resolve({ code, signal })));
  gateway.kill('SIGTERM');
  const timer = setTimeout(() => gateway.kill('SIGKILL'), 30_000);
  const { code, signal } = await exited;
  clearTimeout(timer);
  await rm(dir, { recursive: true, force: true });
  assert.equal(code, 0, `the gateway drains and exits 0 on SIGTERM (it ended with ${code ?? signal})`);
});

describe('speechgate from Node', () => {
  it('synthesizes to a WAV file with one header and its sizes patched', async () => {
    const client = connect(address, 'any-key');
    const file = path.join(dir, 'hello.wav');
    const totals = await synthesizeToWav(client, { text: 'Hello from Node.', voiceId: 'avery', sampleRateHz: 16000 }, file);
    client.close();
    const wav = await readFile(file);
    assert.equal(wav.toString('ascii', 0, 4), 'RIFF');
    assert.equal(wav.toString('ascii', 8, 12), 'WAVE');
    assert.equal(wav.readUInt32LE(24), 16000, 'sample rate');
    assert.equal(wav.readUInt16LE(22), 1, 'mono');
    assert.equal(wav.readUInt32LE(40), wav.length - 44, 'the data size is patched');
    assert.equal(wav.indexOf('RIFF', 4), -1, 'one header only');
    assert.equal(totals.audioDurationMs, 960); // 16 characters at 60 ms
    assert.equal(totals.audioBytes, wav.length);
  });

  it('transcribes a file through the streamed upload', async () => {
    const client = connect(address, 'any-key');
    const file = path.join(dir, 'speech.wav');
    await synthesizeToWav(client, { text: 'Node streams the upload.', voiceId: 'avery', sampleRateHz: 16000 }, file);
    const transcript = await transcribeFile(client, file, { language: 'en', wordTimestamps: true });
    client.close();
    assert.equal(transcript.text, 'Node streams the upload.');
    assert.equal(transcript.status, 'TRANSCRIPTION_STATUS_COMPLETED');
    assert.equal(transcript.words.length, 4);
  });

  it('lists voices with their capabilities', async () => {
    const client = connect(address, 'any-key');
    const resp = await new Promise((resolve, reject) =>
      client.synthesis.listVoices({ language: 'hi' }, client.metadata(), (err, r) => (err ? reject(err) : resolve(r))),
    );
    client.close();
    assert.ok(resp.voices.length > 0);
    assert.ok(resp.voices.every((v) => v.languageCodes.includes('hi')));
    assert.equal(resp.voices.find((v) => v.voiceId === 'meher').capabilities.wordTimestamps, true);
  });

  it('reads the details of an error', async () => {
    const client = connect(address, 'any-key');
    const err = await synthesizeToWav(client, { text: 'hi', voiceId: 'nobody' }, path.join(dir, 'x.wav')).catch((e) => e);
    client.close();
    const details = errorDetails(err);
    assert.equal(details.codeName, 'INVALID_ARGUMENT');
    assert.equal(details.errorInfo.domain, 'speechgate');
    assert.equal(details.errorInfo.reason, 'UPSTREAM_INVALID_ARGUMENT');
    assert.ok(details.errorInfo.metadata.upstreamRequestId, 'the upstream request id is there to quote');
    assert.deepEqual(
      details.fieldViolations.map((v) => v.field),
      ['voice_id'],
    );
  });

  it('holds a conversation with a tool call', async () => {
    // 800 ms of a loud tone: a turn the emulated Hydra hears and echoes.
    const samples = 12800;
    const wav = Buffer.alloc(44 + 2 * samples);
    wav.write('RIFF', 0, 'ascii');
    wav.writeUInt32LE(36 + 2 * samples, 4);
    wav.write('WAVEfmt ', 8, 'ascii');
    wav.writeUInt32LE(16, 16);
    wav.writeUInt16LE(1, 20);
    wav.writeUInt16LE(1, 22);
    wav.writeUInt32LE(16000, 24);
    wav.writeUInt32LE(32000, 28);
    wav.writeUInt16LE(2, 32);
    wav.writeUInt16LE(16, 34);
    wav.write('data', 36, 'ascii');
    wav.writeUInt32LE(2 * samples, 40);
    for (let i = 0; i < samples; i++) wav.writeInt16LE(Math.round(8000 * Math.sin((2 * Math.PI * 300 * i) / 16000)), 44 + 2 * i);
    const question = path.join(dir, 'question.wav');
    await writeFile(question, wav);
    const client = connect(address, 'any-key');
    const answer = path.join(dir, 'answer.wav');
    const { kinds, audioMs } = await converseWav(client, question, answer, {
      config: { tools: [{ name: 'lookup' }], output: { sampleRateHz: 16000 } },
    });
    client.close();
    assert.deepEqual(kinds, [
      'started', 'speechStarted', 'speechStopped', 'responseStarted', 'toolCall', 'responseDone',
      'responseStarted', 'format', 'audio', 'audioDone', 'responseDone',
    ]);
    assert.ok(audioMs > 1050 && audioMs < 1150, `the 1.1 s turn echoed, got ${audioMs} ms`);
    const out = await readFile(answer);
    assert.equal(out.readUInt32LE(24), 16000, 'sample rate');
    assert.equal(out.readUInt32LE(40), out.length - 44, 'the data size is patched');
  });

  it('calls the HTTP port with the Connect protocol', async () => {
    const resp = await connectCall(httpBase, 'any-key', 'speech.v1.SynthesisService/ListVoices', { language: 'hi' });
    assert.ok(resp.voices.length > 0);
    assert.ok(resp.voices.every((v) => v.languageCodes.includes('hi')));
    const err = await connectCall(httpBase, '', 'speech.v1.SynthesisService/ListVoices', {}).catch((e) => e);
    assert.equal(err.httpStatus, 401);
    assert.equal(err.connect.code, 'unauthenticated');
  });

  it('refuses a call without credentials', async () => {
    const client = connect(address, '');
    const err = await transcribeFile(client, path.join(dir, 'hello.wav'), { language: 'en' }).catch((e) => e);
    client.close();
    const details = errorDetails(err);
    assert.equal(details.codeName, 'UNAUTHENTICATED');
    assert.equal(details.errorInfo.reason, 'MISSING_CREDENTIALS');
  });
});
