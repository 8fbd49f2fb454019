// A Node.js client of speechgate. It loads the contract from proto/ at run
// time with @grpc/proto-loader (no generated code), and shows the things
// most callers need: synthesize to a WAV file, transcribe a file, hold a
// spoken conversation, and read the google.rpc details of an error.

import { open, readFile } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';

const protoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../proto');

const definition = protoLoader.loadSync(['speech/v1/synthesis.proto', 'speech/v1/transcription.proto', 'speech/v1/conversation.proto'], {
  includeDirs: [protoRoot],
  keepCase: false, // fields in lowerCamelCase, as in JSON
  longs: Number, // audio byte counts fit a double
  enums: String, // 'AUDIO_ENCODING_WAV' rather than 2
  defaults: true,
  oneofs: true, // a message says which oneof field it holds: msg.event === 'audio'
});
const speech = grpc.loadPackageDefinition(definition).speech.v1;

/**
 * Clients of the three services on one connection.
 * @param {string} address host:port of the gateway
 * @param {string} token the bearer token (a Smallest key with --auth=passthrough)
 */
export function connect(address, token) {
  const creds = grpc.credentials.createInsecure(); // h2c; use createSsl() for --tls-cert gateways
  const channel = new speech.SynthesisService(address, creds);
  const transcription = new speech.TranscriptionService(address, creds, { channelOverride: channel.getChannel() });
  const conversation = new speech.ConversationService(address, creds, { channelOverride: channel.getChannel() });
  const metadata = () => {
    const md = new grpc.Metadata();
    if (token) md.set('authorization', `Bearer ${token}`);
    return md;
  };
  return { synthesis: channel, transcription, conversation, metadata, close: () => channel.close() };
}

/**
 * Synthesizes text to a WAV file, writing each chunk as it arrives, then
 * patches the header's sizes so that every tool reads the file's length.
 * Resolves to the stream's totals.
 */
export async function synthesizeToWav(client, request, file) {
  const out = await open(file, 'w');
  try {
    const call = client.synthesis.synthesize(
      { ...request, encoding: 'AUDIO_ENCODING_WAV' },
      client.metadata(),
    );
    let totals = null;
    let written = 0;
    for await (const msg of call) {
      if (msg.event === 'audio') {
        await out.write(msg.audio.data);
        written += msg.audio.data.length;
      } else if (msg.event === 'totals') {
        totals = msg.totals;
      }
    }
    if (!totals) throw new Error('the stream ended without its totals');
    // The streamed header says "length unknown" (0xFFFFFFFF); patch it.
    const sizes = Buffer.alloc(4);
    sizes.writeUInt32LE(written - 8, 0);
    await out.write(sizes, 0, 4, 4);
    sizes.writeUInt32LE(written - 44, 0);
    await out.write(sizes, 0, 4, 40);
    return totals;
  } finally {
    await out.close();
  }
}

/**
 * Transcribes a file through the streamed upload: the config, then the
 * file in 256 KiB pieces, so that memory stays flat however large it is.
 */
export function transcribeFile(client, file, config) {
  return new Promise((resolve, reject) => {
    const call = client.transcription.transcribeUpload(client.metadata(), (err, resp) =>
      err ? reject(err) : resolve(resp.transcript),
    );
    call.write({ config });
    const input = createReadStream(file, { highWaterMark: 256 * 1024 });
    input.on('data', (piece) => {
      if (!call.write({ audio: piece })) {
        input.pause();
        call.once('drain', () => input.resume());
      }
    });
    input.on('end', () => call.end());
    input.on('error', (err) => {
      call.cancel();
      reject(err);
    });
  });
}

/**
 * Holds a conversation with Hydra: plays a 16 kHz mono 16-bit WAV file in
 * (as fast as the gateway takes it, then 1.5 s of silence so that the last
 * turn ends), answers every tool call with toolResult, and writes the
 * answers' audio to a WAV file. With tools, it ends its side 2 s after the
 * last tool call; the gateway ends the call once Hydra is quiet. Resolves to
 * the events' kinds in order and the answers' length in milliseconds.
 */
export async function converseWav(client, inFile, outFile, { config = {}, toolResult = '{"ok": true}' } = {}) {
  const wav = await readFile(inFile);
  if (wav.toString('ascii', 0, 4) !== 'RIFF' || wav.readUInt16LE(22) !== 1 || wav.readUInt32LE(24) !== 16000 || wav.readUInt16LE(34) !== 16) {
    throw new Error(`${inFile}: want a 16 kHz mono 16-bit WAV file`);
  }
  const pcm = Buffer.concat([wav.subarray(44), Buffer.alloc(48000)]);
  const out = await open(outFile, 'w');
  try {
    const call = client.conversation.converse(client.metadata());
    const tools = (config.tools ?? []).length > 0;
    let endTimer = null;
    const endLater = () => {
      clearTimeout(endTimer);
      endTimer = setTimeout(() => call.end(), 2000);
    };
    call.write({ config });
    for (let i = 0; i < pcm.length; i += 1280) call.write({ audio: pcm.subarray(i, i + 1280) });
    if (tools) endLater();
    else call.end();
    const kinds = [];
    let format = null;
    let written = 0;
    await out.write(Buffer.alloc(44)); // the header, written once the format is known
    for await (const msg of call) {
      if (kinds.at(-1) !== msg.event || msg.event !== 'audio') kinds.push(msg.event);
      if (msg.event === 'format') format = msg.format;
      if (msg.event === 'audio') {
        await out.write(msg.audio.data);
        written += msg.audio.data.length;
      }
      if (msg.event === 'toolCall') {
        call.write({ toolResult: { callId: msg.toolCall.callId, output: toolResult } });
        call.write({ respond: {} });
        endLater();
      }
    }
    clearTimeout(endTimer);
    if (!format) throw new Error('the conversation ended without an answer');
    const header = Buffer.alloc(44);
    const bytesPerSample = format.bitsPerSample / 8;
    header.write('RIFF', 0, 'ascii');
    header.writeUInt32LE(36 + written, 4);
    header.write('WAVEfmt ', 8, 'ascii');
    header.writeUInt32LE(16, 16);
    header.writeUInt16LE(format.encoding === 'AUDIO_ENCODING_PCM_S16LE' ? 1 : 7, 20); // 7: μ-law
    header.writeUInt16LE(1, 22);
    header.writeUInt32LE(format.sampleRateHz, 24);
    header.writeUInt32LE(format.sampleRateHz * bytesPerSample, 28);
    header.writeUInt16LE(bytesPerSample, 32);
    header.writeUInt16LE(format.bitsPerSample, 34);
    header.write('data', 36, 'ascii');
    header.writeUInt32LE(written, 40);
    await out.write(header, 0, 44, 0);
    return { kinds, audioMs: Math.round((written / bytesPerSample / format.sampleRateHz) * 1000) };
  } finally {
    await out.close();
  }
}

/**
 * Calls a unary RPC over the Connect protocol, with nothing but fetch: what a
 * browser or any HTTP client can do against the gateway's HTTP port
 * (--http-addr). Resolves to the response as JSON; rejects with the Connect
 * error ({code, message, details}) and its HTTP status.
 * @param {string} httpBase e.g. http://localhost:8080
 * @param {string} method e.g. 'speech.v1.SynthesisService/ListVoices'
 */
export async function connectCall(httpBase, token, method, request) {
  const resp = await fetch(`${httpBase}/${method}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'connect-protocol-version': '1',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify(request),
  });
  const body = await resp.json();
  if (!resp.ok) throw Object.assign(new Error(body.message), { httpStatus: resp.status, connect: body });
  return body;
}

// The google.rpc types an error carries, declared here rather than loaded
// from googleapis' .proto files, which this example does not ship.
const rpc = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: {
          nested: {
            Any: { fields: { type_url: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } } },
            Duration: { fields: { seconds: { type: 'int64', id: 1 }, nanos: { type: 'int32', id: 2 } } },
          },
        },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: 'int32', id: 1 },
                message: { type: 'string', id: 2 },
                details: { rule: 'repeated', type: 'google.protobuf.Any', id: 3 },
              },
            },
            ErrorInfo: {
              fields: {
                reason: { type: 'string', id: 1 },
                domain: { type: 'string', id: 2 },
                metadata: { keyType: 'string', type: 'string', id: 3 },
              },
            },
            RetryInfo: { fields: { retry_delay: { type: 'google.protobuf.Duration', id: 1 } } },
            QuotaFailure: {
              fields: { violations: { rule: 'repeated', type: 'Violation', id: 1 } },
              nested: { Violation: { fields: { subject: { type: 'string', id: 1 }, description: { type: 'string', id: 2 } } } },
            },
            BadRequest: {
              fields: { field_violations: { rule: 'repeated', type: 'FieldViolation', id: 1 } },
              nested: {
                FieldViolation: {
                  fields: {
                    field: { type: 'string', id: 1 },
                    description: { type: 'string', id: 2 },
                    reason: { type: 'string', id: 3 },
                  },
                },
              },
            },
          },
        },
      },
    },
  },
});

/**
 * Reads the google.rpc details of a gRPC error: the ErrorInfo's reason and
 * metadata, the RetryInfo's delay in seconds, the fields a BadRequest names,
 * and the QuotaFailure's violations.
 */
export function errorDetails(err) {
  const out = { code: err.code, codeName: grpc.status[err.code], message: err.details };
  const raw = err.metadata?.get('grpc-status-details-bin')?.[0];
  if (!raw) return out;
  const status = rpc.lookupType('google.rpc.Status').decode(raw);
  for (const any of status.details) {
    const name = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    const type = rpc.lookupType(name);
    const detail = type.toObject(type.decode(any.value), { longs: Number });
    if (name === 'google.rpc.ErrorInfo') out.errorInfo = detail;
    if (name === 'google.rpc.RetryInfo') {
      const d = detail.retry_delay ?? {};
      out.retryAfterSeconds = (d.seconds ?? 0) + (d.nanos ?? 0) / 1e9;
    }
    if (name === 'google.rpc.BadRequest') out.fieldViolations = detail.field_violations;
    if (name === 'google.rpc.QuotaFailure') out.quotaViolations = detail.violations;
  }
  return out;
}
