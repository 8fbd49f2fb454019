package server

import (
	"bytes"
	"context"
	"math"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/smallest"
)

// TranscriptionUpstream is what the transcription service needs from Smallest.
type TranscriptionUpstream interface {
	Transcribe(ctx context.Context, r *smallest.TranscribeRequest) (*smallest.Transcript, error)
}

type transcriptionService struct {
	speechv1.UnimplementedTranscriptionServiceServer
	upstream TranscriptionUpstream
}

func (s *transcriptionService) Transcribe(ctx context.Context, req *speechv1.TranscribeRequest) (*speechv1.TranscribeResponse, error) {
	up, err := planTranscribe(req)
	if err != nil {
		return nil, err
	}
	if audio := req.GetAudio(); len(audio) > 0 {
		up.Audio, up.AudioSize = bytes.NewReader(audio), int64(len(audio))
	}
	t, err := s.upstream.Transcribe(ctx, up)
	if err != nil {
		return nil, err
	}
	noteUpstreamID(ctx, t.RequestID)
	return transcriptMessage(t), nil
}

// transcriptMessage converts Pulse's transcript, in seconds, to the
// gateway's, in milliseconds.
func transcriptMessage(t *smallest.Transcript) *speechv1.TranscribeResponse {
	out := &speechv1.TranscribeResponse{
		Status:            speechv1.TranscriptionStatus_TRANSCRIPTION_STATUS_COMPLETED,
		Transcript:        t.Text,
		Language:          t.Language,
		AudioDurationMs:   ms(t.Duration),
		UpstreamRequestId: t.RequestID,
		Gender:            t.Gender,
		Emotions:          t.Emotions,
	}
	if t.Status == "processing" {
		out.Status = speechv1.TranscriptionStatus_TRANSCRIPTION_STATUS_PROCESSING
	}
	for _, w := range t.Words {
		out.Words = append(out.Words, &speechv1.Word{
			Word:              w.Word,
			StartMs:           ms(w.Start),
			EndMs:             ms(w.End),
			Confidence:        float32(w.Confidence),
			Speaker:           speaker(w.Speaker),
			SpeakerConfidence: float32(w.SpeakerConfidence),
		})
	}
	for _, u := range t.Utterances {
		out.Utterances = append(out.Utterances, &speechv1.Utterance{
			Text: u.Text, StartMs: ms(u.Start), EndMs: ms(u.End), Speaker: speaker(u.Speaker),
		})
	}
	return out
}

// ms converts seconds to whole milliseconds, rounding to the nearest.
func ms(seconds float64) uint32 {
	if seconds <= 0 || math.IsNaN(seconds) {
		return 0
	}
	return uint32(math.Min(math.Round(seconds*1000), math.MaxUint32))
}

func speaker(s *smallest.Speaker) *int32 {
	if s == nil {
		return nil
	}
	v := int32(*s)
	return &v
}
