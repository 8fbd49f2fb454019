package contract

import (
	"strings"

	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/smallest"
)

// upstreamFields maps Smallest's names for request fields and options to
// the contract's, where they differ.
var upstreamFields = map[string]string{
	"output_format":       "encoding",
	"sample_rate":         "sample_rate_hz",
	"pronunciation_dicts": "pronunciation_dict_ids",
	"voiceId":             "voice_id",
	"displayName":         "display_name",
	"file":                "audio",
	"callback_url":        "webhook_url",
}

// FieldName returns the contract's name for a field Smallest named, dotted
// paths included ("items.0.word" keeps its tail).
func FieldName(upstream string) string {
	head, rest, _ := strings.Cut(upstream, ".")
	if f, ok := upstreamFields[head]; ok {
		head = f
	}
	if rest != "" {
		return head + "." + rest
	}
	return head
}

// refuseUnsupported records a violation for every option of up, by its
// upstream name, that the backend cannot carry: the caller is told, rather
// than the option being dropped. Options belong to the transcription
// config, under prefix; the source (url) to the request itself.
func refuseUnsupported(v *rpcerror.Violations, prefix string, up *smallest.TranscribeRequest, b *Backend) {
	if b == nil || b.Unsupported == nil {
		return
	}
	for _, opt := range b.Unsupported(up) {
		field := FieldName(opt)
		if field != "url" {
			field = prefix + "." + field
		}
		v.Add(field, rpcerror.RuleNotAllowed, "is not supported by %s, which this gateway uses", b.Name)
	}
}
