package speech

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/contract"
	"github.com/speechgate/speechgate/internal/rpcerror"
)

func (s *Transcription) Transcribe(ctx context.Context, req *speechv1.TranscribeRequest) (*speechv1.TranscribeResponse, error) {
	up, err := contract.PlanTranscribe(req, s.up.Unsupported)
	if err != nil {
		return nil, err
	}
	if audio := req.GetAudio(); len(audio) > 0 {
		up.Audio, up.AudioSize = bytes.NewReader(audio), int64(len(audio))
		s.metrics.AudioIn("Transcribe", len(audio))
	}
	t, err := s.up.Transcribe(ctx, up)
	if err != nil {
		return nil, err
	}
	noteUpstreamID(ctx, t.RequestID)
	return &speechv1.TranscribeResponse{Transcript: contract.Transcript(t)}, nil
}

func (s *Transcription) TranscribeUpload(stream grpc.ClientStreamingServer[speechv1.TranscribeUploadRequest, speechv1.TranscribeUploadResponse]) error {
	ctx := stream.Context()
	first, err := firstConfig(stream.Recv, (*speechv1.TranscribeUploadRequest).GetConfig)
	if err != nil {
		return err
	}
	up, err := contract.PlanUpload(first, s.up.Unsupported)
	if err != nil {
		return err
	}

	// The upload is piped: the upstream request reads the body while the
	// feeder below receives it, one piece at a time, so memory stays flat
	// however large the file.
	body, feed := io.Pipe()
	up.Audio, up.AudioSize = body, -1
	fed := make(chan error, 1)
	go func() { fed <- s.feed(stream, feed) }()

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
	noteUpstreamID(ctx, t.RequestID)
	return stream.SendAndClose(&speechv1.TranscribeUploadResponse{Transcript: contract.Transcript(t)})
}

var errUpstreamDone = errors.New("the upstream request has finished")

// feed copies the upload's audio into the pipe until the client half-closes,
// and closes the pipe with the reason it stopped. It returns a status error
// for a problem with the upload, and nil otherwise.
func (s *Transcription) feed(stream grpc.ClientStreamingServer[speechv1.TranscribeUploadRequest, speechv1.TranscribeUploadResponse], pipe *io.PipeWriter) error {
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
		case total+int64(len(msg.GetAudio())) > s.caps.MaxUploadBytes:
			var v rpcerror.Violations
			v.Add("audio", rpcerror.RuleTooLong, "the recording must be at most %s (%d bytes); the upload passed that at byte %d",
				megabytes(s.caps.MaxUploadBytes), s.caps.MaxUploadBytes, total+int64(len(msg.GetAudio())))
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
