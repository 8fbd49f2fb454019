#!/usr/bin/env node
// Try the client by hand:
//   node cli.js synthesize "Hello from Node." hello.wav
//   node cli.js transcribe hello.wav
//   node cli.js converse question.wav answer.wav   (16 kHz mono 16-bit WAV in)
// SPEECHCTL_GRPC_ADDR (default localhost:50051) and SPEECHCTL_TOKEN (else
// SMALLEST_API_KEY) set the gateway and the bearer token, as for speechctl.

import { connect, converseWav, errorDetails, synthesizeToWav, transcribeFile } from './speechgate.js';

const [command, ...args] = process.argv.slice(2);
const env = process.env;
const client = connect(env.SPEECHCTL_GRPC_ADDR || 'localhost:50051', env.SPEECHCTL_TOKEN || env.SMALLEST_API_KEY || 'any-key');
try {
  if (command === 'synthesize' && args.length === 2) {
    const totals = await synthesizeToWav(client, { text: args[0], voiceId: 'avery', sampleRateHz: 16000 }, args[1]);
    console.log(`${args[1]}: ${totals.audioDurationMs} ms of audio, ${totals.audioBytes} bytes`);
  } else if (command === 'transcribe' && args.length === 1) {
    const transcript = await transcribeFile(client, args[0], { language: 'en' });
    console.log(transcript.text);
  } else if (command === 'converse' && args.length === 2) {
    const { kinds, audioMs } = await converseWav(client, args[0], args[1], { config: { output: { sampleRateHz: 24000 } } });
    console.log(`${kinds.join(' ')}\n${args[1]}: ${audioMs} ms of answers`);
  } else {
    console.error('usage: node cli.js synthesize TEXT OUT.wav | node cli.js transcribe FILE | node cli.js converse IN.wav OUT.wav');
    process.exitCode = 2;
  }
} catch (err) {
  console.error(JSON.stringify(errorDetails(err), null, 2));
  process.exitCode = 1;
} finally {
  client.close();
}
