package server

import (
	"google.golang.org/grpc"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/audio"
)

// relay sends audio to a caller as numbered, timed AudioChunk messages and
// keeps the running totals for the final message.
type relay struct {
	stream   grpc.ServerStreamingServer[speechv1.SynthesizeResponse]
	timeline *audio.Timeline // nil for MP3: offsets cannot be computed without decoding
	seq      uint32
	bytes    uint64
}

func newRelay(stream grpc.ServerStreamingServer[speechv1.SynthesizeResponse], p *synthesisPlan) *relay {
	r := &relay{stream: stream}
	if p.bytesPerSample > 0 {
		tl := audio.NewTimeline(p.bytesPerSample, int(p.rate))
		r.timeline = &tl
	}
	return r
}

// send sends one audio message. data must not be modified afterwards: gRPC
// may read a message after SendMsg returns. A container header is sent with
// audio set false, so that it takes no time on the timeline.
func (r *relay) send(data []byte, isAudio bool) error {
	chunk := &speechv1.AudioChunk{Data: data, Sequence: r.seq}
	if r.timeline != nil {
		n := len(data)
		if !isAudio {
			n = 0
		}
		off, dur := r.timeline.Advance(n)
		chunk.OffsetMs, chunk.DurationMs = &off, &dur
	}
	if err := r.stream.Send(&speechv1.SynthesizeResponse{Event: &speechv1.SynthesizeResponse_Audio{Audio: chunk}}); err != nil {
		return err
	}
	r.seq++
	r.bytes += uint64(len(data))
	return nil
}

// totals returns the final message's figures that the relay knows.
func (r *relay) totals() *speechv1.SynthesisTotals {
	t := &speechv1.SynthesisTotals{AudioBytes: r.bytes, AudioChunks: r.seq}
	if r.timeline != nil {
		d := r.timeline.Elapsed()
		t.AudioDurationMs = &d
	}
	return t
}
