package speech

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/contract"
	"github.com/speechgate/speechgate/internal/metrics"
	"github.com/speechgate/speechgate/internal/quota"
	"github.com/speechgate/speechgate/internal/rpcerror"
)

// backend is what contract needs to refuse what the upstream cannot carry.
func (s *Transcription) backend() *contract.Backend {
	return &contract.Backend{Name: s.caps.Backend, Unsupported: s.up.Unsupported}
}

// DeleteTranscription deletes a transcription from the account's history
// at Smallest.
func (s *Transcription) DeleteTranscription(ctx context.Context, req *speechv1.DeleteTranscriptionRequest) (*speechv1.DeleteTranscriptionResponse, error) {
	if err := offered(s.caps.History, s.caps.HistoryMissing); err != nil {
		return nil, err
	}
	var v rpcerror.Violations
	contract.CheckID(&v, "request_id", req.GetRequestId(), true)
	if err := v.Err(); err != nil {
		return nil, err
	}
	if err := s.up.DeleteTranscription(ctx, req.GetRequestId()); err != nil {
		return nil, err
	}
	return &speechv1.DeleteTranscriptionResponse{RequestId: req.GetRequestId()}, nil
}

// Transcribe transcribes audio at a URL, which Smallest fetches itself.
func (s *Transcription) Transcribe(ctx context.Context, req *speechv1.TranscribeRequest) (*speechv1.TranscribeResponse, error) {
	up, err := contract.PlanTranscribe(req, s.backend())
	if err != nil {
		return nil, err
	}
	if audio := req.GetAudio(); len(audio) > 0 {
		up.Audio, up.AudioSize = bytes.NewReader(audio), int64(len(audio))
		s.metrics.AudioIn("Transcribe", len(audio))
	}
	// A recording's length is known from its transcript: the quota is
	// checked before and charged after.
	if err := quota.Check(ctx, quota.AudioSeconds); err != nil {
		return nil, err
	}
	t, err := s.up.Transcribe(ctx, up)
	if err != nil {
		return nil, err
	}
	if err := quota.Debit(ctx, quota.AudioSeconds, t.Duration); err != nil {
		return nil, err
	}
	noteUpstreamID(ctx, t.RequestID)
	return &speechv1.TranscribeResponse{Transcript: contract.Transcript(t)}, nil
}

type uploadStream = grpc.ClientStreamingServer[speechv1.TranscribeUploadRequest, speechv1.TranscribeUploadResponse]

// TranscribeUpload pipes the caller's audio to Smallest as it arrives,
// never holding the whole upload, and returns the transcript.
func (s *Transcription) TranscribeUpload(stream uploadStream) error {
	ctx := stream.Context()
	first, err := firstConfig(stream.Recv, (*speechv1.TranscribeUploadRequest).GetConfig, "audio")
	if err != nil {
		return err
	}
	up, err := contract.PlanUpload(first, s.backend())
	if err != nil {
		return err
	}
	if err := quota.Check(ctx, quota.AudioSeconds); err != nil {
		return err
	}
	// Smallest is asked only once there is audio to send: an upload that
	// ends without any is refused here.
	in := &upload{stream: stream, limit: s.caps.MaxUploadBytes, metrics: s.metrics}
	audio, err := in.next()
	if errors.Is(err, io.EOF) {
		var v rpcerror.Violations
		v.Add("audio", rpcerror.RuleRequired, "the upload ended without audio: send the recording in audio messages after the config")
		return v.Err()
	}
	if err != nil {
		return err
	}

	// The upload is piped: the upstream request reads the body while the
	// feeder below receives it, one piece at a time, so memory stays flat
	// however large the file.
	body, pipe := io.Pipe()
	up.Audio, up.AudioSize = body, -1
	fed := make(chan error, 1)
	go func() { fed <- in.feed(pipe, audio) }()

	t, err := s.up.Transcribe(ctx, up)
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
	if err := quota.Debit(ctx, quota.AudioSeconds, t.Duration); err != nil {
		return err
	}
	noteUpstreamID(ctx, t.RequestID)
	return stream.SendAndClose(&speechv1.TranscribeUploadResponse{Transcript: contract.Transcript(t)})
}

var errUpstreamDone = errors.New("the upstream request has finished")

// upload reads the audio messages of an upload, after its config.
type upload struct {
	stream  uploadStream
	limit   int64 // the largest recording the upstream accepts, in bytes
	total   int64
	metrics *metrics.Speech
}

// next returns the next piece of audio, skipping empty messages; io.EOF
// when the caller half-closed; a status error for a message that breaks
// the protocol or passes the limit; and the stream's error otherwise.
func (u *upload) next() ([]byte, error) {
	for {
		msg, err := u.stream.Recv()
		if err != nil {
			return nil, err
		}
		audio := msg.GetAudio()
		var v rpcerror.Violations
		switch {
		case msg.GetConfig() != nil:
			v.Add("config", rpcerror.RuleConflict, "may only be sent once, in the first message")
		case u.total+int64(len(audio)) > u.limit:
			v.Add("audio", rpcerror.RuleTooLong, "the recording must be at most %s (%d bytes); the upload passed that at byte %d",
				megabytes(u.limit), u.limit, u.total+int64(len(audio)))
		}
		if err := v.Err(); err != nil {
			return nil, err
		}
		if len(audio) == 0 {
			continue
		}
		u.total += int64(len(audio))
		u.metrics.AudioIn("TranscribeUpload", len(audio))
		return audio, nil
	}
}

// feed writes first, then the rest of the upload, into the pipe until the
// caller half-closes, and closes the pipe with the reason it stopped. It
// returns a status error for a problem with the upload, and nil otherwise.
func (u *upload) feed(pipe *io.PipeWriter, first []byte) error {
	for audio := first; ; {
		if _, err := pipe.Write(audio); err != nil {
			return nil //nolint:nilerr // the upstream stopped reading; its answer says why
		}
		var err error
		audio, err = u.next()
		switch {
		case errors.Is(err, io.EOF):
			return pipe.Close()
		case err != nil:
			pipe.CloseWithError(err)
			if _, ok := status.FromError(err); ok {
				return err
			}
			return nil // the client went away: the upstream call fails with the context
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
func firstConfig[M, C any](recv func() (M, error), config func(M) *C, follows string) (*C, error) {
	first, err := recv()
	var v rpcerror.Violations
	switch {
	case errors.Is(err, io.EOF):
		v.Add("config", rpcerror.RuleRequired, "the stream ended before its first message, which must hold the config")
	case err != nil:
		return nil, err
	case config(first) == nil:
		v.Add("config", rpcerror.RuleRequired, "the first message must hold the config; %s follows it", follows)
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	return config(first), nil
}
