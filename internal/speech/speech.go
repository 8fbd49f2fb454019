// Package speech is the speech.v1 services: synthesis (Synthesize,
// SynthesizeStream, the voice catalog, dictionaries and clones),
// transcription (Transcribe, TranscribeUpload, TranscribeLive) and
// conversation (Converse, with Hydra). Each
// service registers itself on a *grpc.Server and calls one Upstream, which
// says what it can do; validation and the mapping to and from Smallest's
// API are package contract's, and handlers return the upstream client's
// errors as they are, for the server's interceptor chain to translate.
//
// Upstream is the seam for what sits between the services and Smallest:
// a decorator that implements it (admission, caching) wraps the client.
package speech

import (
	"cmp"
	"context"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/correlation"
	"github.com/speechgate/speechgate/internal/metrics"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/smallest"
	"github.com/speechgate/speechgate/internal/synthcache"
)

// Upstream is what the speech services need from Smallest: its cloud
// (smallest.Client), its self-hosted server (smallest.SelfHost), or a
// decorator of either. Capabilities says which calls it serves; the
// services answer the others UNIMPLEMENTED without calling it.
type Upstream interface {
	Capabilities() smallest.Capabilities
	// Account names the upstream account a call of ctx uses, without its
	// key: what the synthesis cache is scoped by.
	Account(ctx context.Context) string
	// Unsupported names, in the upstream's terms, the options of a
	// transcription it cannot carry.
	Unsupported(*smallest.TranscribeRequest) []string

	StreamSpeech(ctx context.Context, r *smallest.SpeechRequest) (*smallest.SpeechStream, error)
	StreamSpeechText(ctx context.Context, opts *smallest.StreamOptions) (*smallest.SpeechSession, error)
	ListVoices(ctx context.Context) ([]smallest.Voice, error)
	ListPronunciationDictionaries(ctx context.Context) ([]smallest.PronunciationDictionary, error)
	CreatePronunciationDictionary(ctx context.Context, items []smallest.PronunciationItem) (*smallest.PronunciationDictionary, error)
	UpdatePronunciationDictionary(ctx context.Context, id string, items []smallest.PronunciationItem) (*smallest.PronunciationDictionary, error)
	DeletePronunciationDictionary(ctx context.Context, id string) error
	CreateVoiceClone(ctx context.Context, r *smallest.CloneRequest) (*smallest.VoiceClone, error)
	ListVoiceClones(ctx context.Context) ([]smallest.VoiceClone, error)

	Transcribe(ctx context.Context, r *smallest.TranscribeRequest) (*smallest.Transcript, error)
	DeleteTranscription(ctx context.Context, requestID string) error
	Listen(ctx context.Context, r *smallest.LiveRequest) (*smallest.LiveSession, error)

	Converse(ctx context.Context, r *smallest.ConversationRequest) (*smallest.Conversation, error)
}

// Defaults of Options.
const (
	// DefaultPieceChars is the size long text is split to: Smallest advises
	// at most 250 characters per request.
	DefaultPieceChars = 250
)

// Options tune the speech services.
type Options struct {
	// PieceChars is the size, in characters, that Synthesize splits longer
	// text to. Default DefaultPieceChars.
	PieceChars int
	// Lookahead is how many pieces of a long text are requested ahead of
	// the one streaming (0: none).
	Lookahead int
	// Metrics records the speech measures; nil: discarded.
	Metrics *metrics.Speech
	// Cache keeps synthesized audio for reuse; nil: none.
	Cache *synthcache.Cache
}

func (o Options) withDefaults() Options {
	o.PieceChars = cmp.Or(o.PieceChars, DefaultPieceChars)
	o.Lookahead = max(o.Lookahead, 0)
	if o.Metrics == nil {
		o.Metrics = metrics.NewSpeech(prometheus.NewRegistry()) // counted, and never read
	}
	return o
}

// Synthesis is the speech.v1 SynthesisService.
type Synthesis struct {
	speechv1.UnimplementedSynthesisServiceServer
	up      Upstream
	caps    smallest.Capabilities
	opts    Options
	metrics *metrics.Speech
	dicts   *dictVersions
}

// NewSynthesis returns the synthesis service, calling up.
func NewSynthesis(up Upstream, opts Options) *Synthesis {
	opts = opts.withDefaults()
	return &Synthesis{up: up, caps: up.Capabilities(), opts: opts, metrics: opts.Metrics, dicts: newDictVersions(up)}
}

// Register registers the service on s.
func (s *Synthesis) Register(gs *grpc.Server) { speechv1.RegisterSynthesisServiceServer(gs, s) }

// offered refuses a call the upstream does not offer, with why.
func offered(ok bool, missing string) error {
	if !ok {
		return rpcerror.Unimplemented(missing)
	}
	return nil
}

// Transcription is the speech.v1 TranscriptionService.
type Transcription struct {
	speechv1.UnimplementedTranscriptionServiceServer
	up      Upstream
	caps    smallest.Capabilities
	metrics *metrics.Speech
}

// NewTranscription returns the transcription service, calling up.
func NewTranscription(up Upstream, opts Options) *Transcription {
	opts = opts.withDefaults()
	return &Transcription{up: up, caps: up.Capabilities(), metrics: opts.Metrics}
}

// Register registers the service on s.
func (s *Transcription) Register(gs *grpc.Server) {
	speechv1.RegisterTranscriptionServiceServer(gs, s)
}

// noteUpstreamID adds Smallest's request id to the call's log line and, if
// the response headers have not gone yet, to the response metadata.
func noteUpstreamID(ctx context.Context, id string) {
	if id != "" {
		logging.AddFields(ctx, logging.Fields{"upstream_request_id", id})
		grpc.SetHeader(ctx, metadata.Pairs(correlation.UpstreamHeader, id))
	}
}

// upstreamIDs notes the ids of a stream's upstream requests, each once: a
// stream's events repeat the id they belong to, and noting it is not free
// (a log field, response metadata).
type upstreamIDs struct{ last string }

func (u *upstreamIDs) note(ctx context.Context, id string) {
	if id != "" && id != u.last {
		u.last = id
		noteUpstreamID(ctx, id)
	}
}
