package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"

	"google.golang.org/grpc"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/metrics"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/smallest"
)

// TranscriptionUpstream is what the transcription service needs from Smallest.
type TranscriptionUpstream interface {
	// Transcribe sends one recording, reading r.Audio as it goes.
	Transcribe(ctx context.Context, r *smallest.TranscribeRequest) (*smallest.Transcript, error)
}

// limitedUpstream is an upstream that cannot carry every option, such as the
// self-hosted server. Unsupported names the options of r it would have to
// drop, by their field names in TranscriptionConfig ("url" for the source).
type limitedUpstream interface {
	Unsupported(r *smallest.TranscribeRequest) []string
}

// refuseUnsupported records a violation for every option of up the upstream
// cannot carry: the caller is told, rather than the option being dropped.
func (s *transcriptionService) refuseUnsupported(v *rpcerror.Violations, up *smallest.TranscribeRequest) {
	l, ok := s.upstream.(limitedUpstream)
	if !ok {
		return
	}
	for _, field := range l.Unsupported(up) {
		if field != "url" {
			field = "config." + field
		}
		v.Add(field, rpcerror.RuleNotAllowed, "is not supported by the self-hosted Smallest server this gateway uses")
	}
}

type transcriptionService struct {
	speechv1.UnimplementedTranscriptionServiceServer
	upstream TranscriptionUpstream
	// maxUpload is the largest recording the upstream accepts, in bytes.
	maxUpload int64
	live      LiveUpstream
	// liveUnavailable, when set, is why this backend cannot recognize live.
	liveUnavailable string
	metrics         *metrics.Metrics
}

func (s *transcriptionService) Transcribe(ctx context.Context, req *speechv1.TranscribeRequest) (*speechv1.TranscribeResponse, error) {
	up, err := planTranscribe(req, s.refuseUnsupported)
	if err != nil {
		return nil, err
	}
	if audio := req.GetAudio(); len(audio) > 0 {
		up.Audio, up.AudioSize = bytes.NewReader(audio), int64(len(audio))
		s.metrics.AudioIn("Transcribe", len(audio))
	}
	t, err := s.upstream.Transcribe(ctx, up)
	if err != nil {
		return nil, err
	}
	noteUpstreamID(ctx, t.RequestID)
	return &speechv1.TranscribeResponse{Transcript: transcriptMessage(t)}, nil
}

func (s *transcriptionService) TranscribeUpload(stream grpc.ClientStreamingServer[speechv1.TranscribeUploadRequest, speechv1.TranscribeUploadResponse]) error {
	ctx := stream.Context()
	first, err := firstConfig(stream.Recv, (*speechv1.TranscribeUploadRequest).GetConfig)
	if err != nil {
		return err
	}
	var v rpcerror.Violations
	up := planTranscription(&v, "config", first, false)
	s.refuseUnsupported(&v, up)
	if err := v.Err(); err != nil {
		return err
	}

	// The upload is piped: the upstream request reads the body while the
	// feeder below receives it, one piece at a time, so memory stays flat
	// however large the file.
	body, feed := io.Pipe()
	up.Audio, up.AudioSize = body, -1
	fed := make(chan error, 1)
	go func() { fed <- s.feed(stream, feed) }()

	t, err := s.upstream.Transcribe(ctx, up)
	// If the upstream finished early, this unblocks a feeder stuck writing;
	// a feeder waiting for the client ends when the call does.
	body.CloseWithError(errUpstreamDone)
	if err != nil {
		// A problem with the upload itself explains the upstream's failure better.
		select {
		case ferr := <-fed:
			if ferr != nil {
				return ferr
			}
		default:
		}
		return err
	}
	noteUpstreamID(ctx, t.RequestID)
	return stream.SendAndClose(&speechv1.TranscribeUploadResponse{Transcript: transcriptMessage(t)})
}

var errUpstreamDone = errors.New("the upstream request has finished")

// feed copies the upload's audio into the pipe until the client half-closes,
// and closes the pipe with the reason it stopped. It returns a status error
// for a problem with the upload, and nil otherwise.
func (s *transcriptionService) feed(stream grpc.ClientStreamingServer[speechv1.TranscribeUploadRequest, speechv1.TranscribeUploadResponse], pipe *io.PipeWriter) error {
	var total int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return pipe.Close()
		}
		if err != nil {
			pipe.CloseWithError(err)
			return nil // the client went away: the upstream call fails with the context
		}
		var problem error
		switch {
		case msg.GetConfig() != nil:
			var v rpcerror.Violations
			v.Add("config", rpcerror.RuleConflict, "may only be sent once, in the first message")
			problem = v.Err()
		case total+int64(len(msg.GetAudio())) > s.maxUpload:
			var v rpcerror.Violations
			v.Add("audio", rpcerror.RuleTooLong, "the recording must be at most %s (%d bytes); the upload passed that at byte %d",
				megabytes(s.maxUpload), s.maxUpload, total+int64(len(msg.GetAudio())))
			problem = v.Err()
		}
		if problem != nil {
			pipe.CloseWithError(problem)
			return problem
		}
		total += int64(len(msg.GetAudio()))
		s.metrics.AudioIn("TranscribeUpload", len(msg.GetAudio()))
		if _, err := pipe.Write(msg.GetAudio()); err != nil {
			return nil // the upstream stopped reading; its answer says why
		}
	}
}

func megabytes(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MB", n>>20)
	}
	return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
}

// firstConfig receives the first message of a client stream, which must
// hold the config, and returns that config or the status that says what is
// wrong.
func firstConfig[M, C any](recv func() (M, error), config func(M) *C) (*C, error) {
	first, err := recv()
	var v rpcerror.Violations
	switch {
	case errors.Is(err, io.EOF):
		v.Add("config", rpcerror.RuleRequired, "the stream ended before its first message, which must hold the config")
	case err != nil:
		return nil, err
	case config(first) == nil:
		v.Add("config", rpcerror.RuleRequired, "the first message must hold the config; audio follows it")
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	return config(first), nil
}

// transcriptMessage converts Pulse's transcript, in seconds, to the
// gateway's, in milliseconds.
func transcriptMessage(t *smallest.Transcript) *speechv1.Transcript {
	out := &speechv1.Transcript{
		Status:            speechv1.TranscriptionStatus_TRANSCRIPTION_STATUS_COMPLETED,
		Text:              t.Text,
		Language:          t.Language,
		AudioDurationMs:   ms(t.Duration),
		UpstreamRequestId: t.RequestID,
		Gender:            t.Gender,
		Emotions:          t.Emotions,
		Words:             wordMessages(t.Words),
		Utterances:        utteranceMessages(t.Utterances),
	}
	if t.Status == "processing" {
		out.Status = speechv1.TranscriptionStatus_TRANSCRIPTION_STATUS_PROCESSING
	}
	return out
}

func wordMessages(words []smallest.Word) []*speechv1.Word {
	out := make([]*speechv1.Word, 0, len(words))
	for _, w := range words {
		out = append(out, &speechv1.Word{
			Word:              w.Word,
			StartMs:           ms(w.Start),
			EndMs:             ms(w.End),
			Confidence:        float32(w.Confidence),
			Speaker:           speaker(w.Speaker),
			SpeakerConfidence: float32(w.SpeakerConfidence),
		})
	}
	return out
}

func utteranceMessages(utterances []smallest.Utterance) []*speechv1.Utterance {
	out := make([]*speechv1.Utterance, 0, len(utterances))
	for _, u := range utterances {
		out = append(out, &speechv1.Utterance{Text: u.Text, StartMs: ms(u.Start), EndMs: ms(u.End), Speaker: speaker(u.Speaker)})
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
