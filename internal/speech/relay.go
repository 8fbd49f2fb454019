package speech

import (
	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/audio"
	"github.com/speechgate/speechgate/internal/metrics"
)

// relay sends audio to a caller as numbered, timed AudioChunk messages and
// keeps the running totals for the final message. Synthesize and
// SynthesizeStream differ only in the message that wraps each chunk, which
// emit supplies.
type relay struct {
	emit     func(*speechv1.AudioChunk) error
	meter    *metrics.Stream
	timeline *audio.Timeline // nil for MP3: offsets cannot be computed without decoding
	seq      uint32
	bytes    uint64
	// segmentID is the segment the next audio is of (SynthesizeStream).
	segmentID string
	// msg is the chunk every send fills in and emits: gRPC encodes a message
	// inside SendMsg, and nothing in the gateway's chain keeps it after
	// (the stats handlers and interceptors read it synchronously, binary
	// logging copies the encoding), so one chunk serves the whole stream
	// instead of an allocation per message.
	msg struct {
		chunk    speechv1.AudioChunk
		off, dur uint32
	}
}

func newRelay(emit func(*speechv1.AudioChunk) error, meter *metrics.Stream, bytesPerSample int, rate uint32) *relay {
	r := &relay{emit: emit, meter: meter}
	if bytesPerSample > 0 {
		tl := audio.NewTimeline(bytesPerSample, int(rate))
		r.timeline = &tl
	}
	return r
}

// send sends one audio message. data may be reused once it returns: the
// message has been encoded. A container header is sent with isAudio false,
// so that it takes no time on the timeline.
func (r *relay) send(data []byte, isAudio bool) error {
	m := &r.msg
	chunk := &m.chunk
	chunk.Data, chunk.Sequence, chunk.SegmentId = data, r.seq, r.segmentID
	chunk.OffsetMs, chunk.DurationMs = nil, nil
	if r.timeline != nil {
		n := len(data)
		if !isAudio {
			n = 0
		}
		m.off, m.dur = r.timeline.Advance(n)
		chunk.OffsetMs, chunk.DurationMs = &m.off, &m.dur
	}
	err := r.emit(chunk)
	chunk.Data = nil // the stream's bytes are not held past their send
	if err != nil {
		return err
	}
	if isAudio {
		r.meter.Audio(len(data))
	}
	r.seq++
	r.bytes += uint64(len(data))
	return nil
}

// header sends the WAV header when the container wants one.
func (r *relay) header(container speechv1.AudioContainer, rate uint32) error {
	if container != speechv1.AudioContainer_AUDIO_CONTAINER_WAV {
		return nil
	}
	return r.send(audio.AppendWAVHeader(nil, int(rate), 1, 16, audio.UnknownSize), false)
}

// elapsed is the audio sent so far, in milliseconds (0 for MP3).
func (r *relay) elapsed() uint32 {
	if r.timeline == nil {
		return 0
	}
	return r.timeline.Elapsed()
}

// totals returns the final message's figures that the relay knows, and
// records the stream's audio length.
func (r *relay) totals() *speechv1.SynthesisTotals {
	t := &speechv1.SynthesisTotals{AudioBytes: r.bytes, AudioChunks: r.seq}
	if r.timeline != nil {
		d := r.timeline.Elapsed()
		t.AudioDurationMs = &d
		r.meter.Done(d)
	}
	return t
}
