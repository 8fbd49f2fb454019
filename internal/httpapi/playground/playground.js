// The speechgate playground: the gateway's HTTP access from a page, with
// nothing but the browser. Voices come over the Connect protocol, speech as
// a streamed HTTP body played as it arrives, word timings and live
// transcription over the WebSocket bridge, and file transcription as a
// request body. Its state is on window.playground for tests.
'use strict';

const $ = (id) => document.getElementById(id);
const state = { samplesPlayed: 0, ttfaMs: null, voices: 0, words: [], transcript: '', finals: [] };
window.playground = state;

const RATE = 24000; // the rate asked of synthesis, and played

const tokenInput = $('token');
tokenInput.value = localStorage.getItem('speechgate-token') || 'playground';
tokenInput.addEventListener('change', () => {
  localStorage.setItem('speechgate-token', tokenInput.value);
  loadVoices();
});
const authHeader = () => ({ authorization: `Bearer ${tokenInput.value}` });

// showError renders a google.rpc.Status (or a transport failure) with what
// the details advise.
function showError(where, status) {
  const lines = [`${where}: ${status.codeName || status.code || 'error'} ${status.message || ''}`];
  for (const d of status.details || []) {
    if (d.reason) lines.push(`reason: ${d.reason}`);
    for (const v of d.fieldViolations || []) lines.push(`fix ${v.field}: ${v.description}`);
    if (d.retryDelay) lines.push(`retry after ${d.retryDelay}`);
    for (const v of d.violations || []) lines.push(`quota: ${v.subject}: ${v.description}`);
  }
  $('errors').hidden = false;
  $('error').textContent = lines.join('\n');
  state.lastError = lines.join('\n');
}
const clearError = () => { $('errors').hidden = true; };

const codeNames = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS',
  'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL',
  'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];

// errorOf reads an HTTP error answer: a google.rpc.Status, or Connect's error.
async function errorOf(resp) {
  try {
    const body = await resp.json();
    if (typeof body.code === 'number') return { ...body, codeName: codeNames[body.code] };
    return { codeName: String(body.code).toUpperCase(), message: body.message, details: (body.details || []).map((d) => d.debug || d) };
  } catch {
    return { codeName: `HTTP ${resp.status}`, message: resp.statusText };
  }
}

async function loadVoices() {
  const req = {};
  if ($('language').value) req.language = $('language').value;
  if ($('gender').value) req.gender = $('gender').value;
  const resp = await fetch('/speech.v1.SynthesisService/ListVoices', {
    method: 'POST', headers: { ...authHeader(), 'content-type': 'application/json', 'connect-protocol-version': '1' },
    body: JSON.stringify(req),
  });
  if (!resp.ok) return showError('voices', await errorOf(resp));
  const { voices = [] } = await resp.json();
  const select = $('voice');
  select.replaceChildren(...voices.map((v) => {
    const o = document.createElement('option');
    o.value = v.voiceId;
    o.textContent = `${v.displayName || v.voiceId}${v.capabilities?.wordTimestamps ? ' · word timings' : ''}`;
    return o;
  }));
  state.voices = voices.length;
  $('voices-status').textContent = `${voices.length} voices`;
}
$('language').addEventListener('change', loadVoices);
$('gender').addEventListener('change', loadVoices);

// A player that schedules PCM16 pieces back to back as they arrive.
class Player {
  constructor() {
    this.ctx = new AudioContext({ sampleRate: RATE });
    this.at = 0;
    this.carry = null;
    this.canvas = $('waveform').getContext('2d');
    this.canvas.clearRect(0, 0, 900, 90);
    this.x = 0;
  }
  push(bytes) {
    if (this.carry) { bytes = concat(this.carry, bytes); this.carry = null; }
    if (bytes.length % 2) { this.carry = bytes.slice(-1); bytes = bytes.slice(0, -1); }
    if (!bytes.length) return;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    const n = bytes.length / 2;
    const buf = this.ctx.createBuffer(1, n, RATE);
    const ch = buf.getChannelData(0);
    for (let i = 0; i < n; i++) ch[i] = view.getInt16(2 * i, true) / 32768;
    const src = this.ctx.createBufferSource();
    src.buffer = buf;
    src.connect(this.ctx.destination);
    this.at = Math.max(this.at, this.ctx.currentTime + 0.05);
    src.start(this.at);
    this.at += n / RATE;
    state.samplesPlayed += n;
    this.draw(ch);
  }
  draw(ch) {
    const g = this.canvas;
    g.fillStyle = '#3d6fd9';
    const step = RATE / 50; // a pixel per 20 ms
    for (let i = 0; i < ch.length; i += step) {
      let peak = 0;
      for (let j = i; j < Math.min(i + step, ch.length); j++) peak = Math.max(peak, Math.abs(ch[j]));
      g.fillRect(this.x % 900, 45 - peak * 44, 1, Math.max(1, peak * 88));
      this.x++;
    }
  }
}
const concat = (a, b) => { const c = new Uint8Array(a.length + b.length); c.set(a); c.set(b, a.length); return c; };

// speak: POST the text, play the body as it streams in.
$('speak').addEventListener('click', async () => {
  clearError();
  state.samplesPlayed = 0;
  state.ttfaMs = null;
  $('words').replaceChildren();
  const start = performance.now();
  $('synth-status').textContent = 'synthesizing…';
  const resp = await fetch('/v1/speech:synthesize', {
    method: 'POST', headers: { ...authHeader(), 'content-type': 'application/json' },
    body: JSON.stringify({ text: $('text').value, voiceId: $('voice').value, sampleRateHz: RATE, encoding: 'AUDIO_ENCODING_PCM_S16LE' }),
  }).catch((e) => ({ ok: false, transport: e }));
  if (!resp.ok) {
    $('synth-status').textContent = 'failed';
    return showError('speak', resp.transport ? { codeName: 'UNAVAILABLE', message: String(resp.transport) } : await errorOf(resp));
  }
  const player = new Player();
  const reader = resp.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (state.ttfaMs === null) {
        state.ttfaMs = Math.round(performance.now() - start);
        $('ttfa').textContent = `${state.ttfaMs} ms`;
        $('synth-status').textContent = 'playing while the rest arrives…';
      }
      player.push(value);
    }
    $('synth-status').textContent = `done: ${(state.samplesPlayed / RATE).toFixed(2)} s of audio`;
  } catch (e) {
    // A failure after the first byte aborts the response: the audio is cut.
    $('synth-status').textContent = 'broken off';
    showError('speak', { codeName: 'UNAVAILABLE', message: `the audio broke off: ${e}` });
  }
});

// wsURL is a bridge's address; the token goes in the URL, as browsers set
// no headers on a WebSocket.
const wsURL = (method, query = '') =>
  `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws/${method}?access_token=${encodeURIComponent(tokenInput.value)}${query}`;

function bridgeEnded(where, e, lastError) {
  if (e.code === 1000) return;
  showError(where, lastError || { codeName: codeNames[e.code - 4000] || `close ${e.code}`, message: e.reason });
}

// speak-stream: SynthesizeStream over the bridge, with word timings.
$('speak-stream').addEventListener('click', () => {
  clearError();
  state.samplesPlayed = 0;
  state.ttfaMs = null;
  state.words = [];
  $('words').replaceChildren();
  const player = new Player();
  const start = performance.now();
  let lastError = null;
  const ws = new WebSocket(wsURL('synthesize-stream', '&binary_audio=true'));
  ws.binaryType = 'arraybuffer';
  $('synth-status').textContent = 'streaming…';
  ws.onopen = () => {
    ws.send(JSON.stringify({ config: { voiceId: $('voice').value, sampleRateHz: RATE, wordTimestamps: true } }));
    ws.send(JSON.stringify({ text: { text: $('text').value, flush: true } }));
    ws.send('end');
  };
  ws.onmessage = (e) => {
    if (e.data instanceof ArrayBuffer) {
      if (state.ttfaMs === null) {
        state.ttfaMs = Math.round(performance.now() - start);
        $('ttfa').textContent = `${state.ttfaMs} ms`;
      }
      player.push(new Uint8Array(e.data));
      return;
    }
    const m = JSON.parse(e.data);
    if (m.word) {
      state.words.push(m.word);
      const li = document.createElement('li');
      li.textContent = `${((m.word.startMs || 0) / 1000).toFixed(2)}–${(m.word.endMs / 1000).toFixed(2)} s  ${m.word.word}`;
      $('words').append(li);
    }
    if (m.error) lastError = { ...m.error, codeName: codeNames[m.error.code] };
    if (m.totals) $('synth-status').textContent = `done: ${(m.totals.audioDurationMs / 1000).toFixed(2)} s, ${state.words.length} words`;
  };
  ws.onclose = (e) => bridgeEnded('speak with word timings', e, lastError);
});

// listen: the microphone to TranscribeLive, as 16 kHz PCM16.
let listening = null;
$('listen').addEventListener('click', async () => {
  if (listening) return listening.stop();
  clearError();
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    return showError('listen', { codeName: 'PERMISSION_DENIED', message: `no microphone: ${e}` });
  }
  const ctx = new AudioContext();
  const source = ctx.createMediaStreamSource(stream);
  const proc = ctx.createScriptProcessor(4096, 1, 1);
  const ws = new WebSocket(wsURL('transcribe-live'));
  let lastError = null;
  ws.onopen = () => {
    ws.send(JSON.stringify({ config: { language: 'en', sampleRateHz: 16000, interimResults: true } }));
    source.connect(proc);
    proc.connect(ctx.destination);
    $('live-status').textContent = 'listening…';
  };
  proc.onaudioprocess = (e) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    const input = e.inputBuffer.getChannelData(0);
    const ratio = ctx.sampleRate / 16000;
    const out = new Int16Array(Math.floor(input.length / ratio));
    for (let i = 0; i < out.length; i++) out[i] = Math.max(-1, Math.min(1, input[Math.floor(i * ratio)])) * 32767;
    ws.send(out.buffer);
  };
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.error) lastError = { ...m.error, codeName: codeNames[m.error.code] };
    const t = m.transcript;
    if (!t) return;
    if (t.isFinal) {
      state.finals.push(t.text);
      $('final').textContent = state.finals.join(' ');
      $('interim').textContent = '';
    } else {
      $('interim').textContent = t.text;
    }
  };
  ws.onclose = (e) => {
    stop();
    bridgeEnded('listen', e, lastError);
  };
  const stop = () => {
    if (ws.readyState === WebSocket.OPEN) ws.send('end');
    proc.disconnect();
    source.disconnect();
    stream.getTracks().forEach((tr) => tr.stop());
    $('listen').textContent = 'Start listening';
    $('live-status').textContent = '';
    listening = null;
  };
  listening = { stop };
  $('listen').textContent = 'Stop';
});

// file: the recording as a request body, the words as a timed list.
$('file').addEventListener('change', async () => {
  const file = $('file').files[0];
  if (!file) return;
  clearError();
  $('file-status').textContent = `transcribing ${file.name}…`;
  const resp = await fetch('/v1/speech:transcribe?language=en&word_timestamps=true', {
    method: 'POST', headers: { ...authHeader(), 'content-type': file.type || 'application/octet-stream' }, body: file,
  });
  if (!resp.ok) {
    $('file-status').textContent = 'failed';
    return showError('transcribe', await errorOf(resp));
  }
  const { transcript = {} } = await resp.json();
  state.transcript = transcript.text || '';
  $('transcript').textContent = state.transcript;
  $('file-words').tBodies[0].replaceChildren(...(transcript.words || []).map((w) => {
    const tr = document.createElement('tr');
    for (const v of [((w.startMs || 0) / 1000).toFixed(2), ((w.endMs || 0) / 1000).toFixed(2), w.word]) {
      const td = document.createElement('td');
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  }));
  $('file-status').textContent = `${(transcript.words || []).length} words`;
});

loadVoices();
