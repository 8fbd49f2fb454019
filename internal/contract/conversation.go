package contract

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
	"github.com/speechgate/speechgate/internal/rpcerror"
	"github.com/speechgate/speechgate/internal/smallest"
)

// Limits of a conversation, documented in the .proto.
const (
	maxInstructions     = 32768
	maxTools            = 64
	maxToolName         = 64
	maxToolDescription  = 4096
	maxToolOutput       = 65536
	maxCallID           = 128
	maxConverseAudio    = 1 << 20
	maxToolSchemaBytes  = 64 << 10
	defaultConverseRate = smallest.HydraOutputRate
)

// hydraModels are Hydra's versions, with their voice rosters (docs/upstream.md §6.5).
var hydraModels = map[speechv1.ConversationModel]struct {
	tag    string
	voices []string
}{
	speechv1.ConversationModel_CONVERSATION_MODEL_UNSPECIFIED: {"hydra-v1.1", hydraV11Voices},
	speechv1.ConversationModel_CONVERSATION_MODEL_HYDRA_V1_1:  {"hydra-v1.1", hydraV11Voices},
	speechv1.ConversationModel_CONVERSATION_MODEL_HYDRA_V1_0: {"hydra-v1.0", []string{"vaughn", "brooks", "cole", "hayes", "pierce",
		"sterling", "ellis", "lane", "quinn", "arden", "rowan", "blair", "emery", "sawyer"}},
}

var hydraV11Voices = []string{"zoe", "maya", "elena", "ivy", "grace", "alex", "aria", "leo", "sam", "kai"}

var toolName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Conversation is a planned Converse: the Hydra session to open, and how
// its audio reaches the caller.
type Conversation struct {
	Request   *smallest.ConversationRequest
	Format    *speechv1.ConversationFormat
	Heartbeat time.Duration // 0: none
	// Decimation is how many of Hydra's 48 kHz samples make one sample
	// sent (1, 2, 3 or 6).
	Decimation int
}

// PlanConversation validates a Converse config and returns the session to
// open in Smallest's form.
func PlanConversation(c *speechv1.ConversationConfig) (*Conversation, error) {
	var all rpcerror.Violations
	v := all.Under("config")
	model, ok := hydraModels[c.GetModel()]
	if !ok {
		v.Add("model", rpcerror.RuleNotAllowed, "must be a ConversationModel value, got %d", c.GetModel())
	}
	if voice := c.GetVoice(); voice != "" && ok && !slices.Contains(model.voices, voice) {
		v.Add("voice", rpcerror.RuleNotAllowed, "must be one of %s's voices (%s), got %s", model.tag,
			strings.Join(model.voices, ", "), rpcerror.Quote(voice))
	}
	if n := utf8.RuneCountInString(c.GetInstructions()); n > maxInstructions {
		v.Add("instructions", rpcerror.RuleTooLong, "must be at most %d characters, got %d", maxInstructions, n)
	}
	tools := PlanTools(v, "tools", c.GetTools())
	out := &speechv1.ConversationFormat{Channels: 1}
	decimation := 1
	switch enc := c.GetOutput().GetEncoding(); enc {
	case speechv1.AudioEncoding_AUDIO_ENCODING_UNSPECIFIED, speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE:
		out.Encoding, out.BitsPerSample, out.SampleRateHz = speechv1.AudioEncoding_AUDIO_ENCODING_PCM_S16LE, 16, defaultConverseRate
		switch rate := c.GetOutput().GetSampleRateHz(); rate {
		case 0, 48000, 24000, 16000, 8000:
			if rate != 0 {
				out.SampleRateHz = rate
			}
			decimation = defaultConverseRate / int(out.SampleRateHz)
		default:
			v.Add("output.sample_rate_hz", rpcerror.RuleNotAllowed, "must be 48000, 24000, 16000 or 8000, got %d", rate)
		}
	case speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, speechv1.AudioEncoding_AUDIO_ENCODING_ALAW:
		out.Encoding, out.BitsPerSample, out.SampleRateHz = enc, 8, 8000
		if rate := c.GetOutput().GetSampleRateHz(); rate != 0 && rate != 8000 {
			v.Add("output.sample_rate_hz", rpcerror.RuleNotAllowed, "must be 8000 (or 0) for %s, got %d", enc, rate)
		}
		decimation = defaultConverseRate / 8000
	default:
		v.Add("output.encoding", rpcerror.RuleNotAllowed, "must be AUDIO_ENCODING_PCM_S16LE, AUDIO_ENCODING_MULAW or AUDIO_ENCODING_ALAW, got %s", enc)
	}
	heartbeat := CheckHeartbeat(v, "heartbeat_interval_ms", c.GetHeartbeatIntervalMs())
	if err := all.Err(); err != nil {
		return nil, err
	}
	return &Conversation{
		Request: &smallest.ConversationRequest{Model: model.tag, Instructions: c.GetInstructions(), Voice: c.GetVoice(),
			Tools: tools, RespondFirst: c.GetRespondFirst()},
		Format: out, Heartbeat: heartbeat, Decimation: decimation,
	}, nil
}

// PlanTools validates tools, adding what is wrong to v under field, and
// returns them in Smallest's form.
func PlanTools(v *rpcerror.Violations, field string, tools []*speechv1.Tool) []smallest.Tool {
	if len(tools) > maxTools {
		v.Add(field, rpcerror.RuleTooMany, "must hold at most %d tools, got %d", maxTools, len(tools))
		return nil
	}
	out := make([]smallest.Tool, 0, len(tools))
	seen := map[string]int{}
	for i, t := range tools {
		f := fmt.Sprintf("%s[%d]", field, i)
		switch name := t.GetName(); {
		case name == "":
			v.Add(f+".name", rpcerror.RuleRequired, "is required")
		case len(name) > maxToolName:
			v.Add(f+".name", rpcerror.RuleTooLong, "must be at most %d characters, got %d", maxToolName, len(name))
		case !toolName.MatchString(name):
			v.Add(f+".name", rpcerror.RuleBadFormat, "must use only the characters [A-Za-z0-9_-]")
		default:
			if j, dup := seen[name]; dup {
				v.Add(f+".name", rpcerror.RuleConflict, "%s is already %s[%d]'s name", rpcerror.Quote(name), field, j)
			}
			seen[name] = i
		}
		if n := utf8.RuneCountInString(t.GetDescription()); n > maxToolDescription {
			v.Add(f+".description", rpcerror.RuleTooLong, "must be at most %d characters, got %d", maxToolDescription, n)
		}
		tool := smallest.Tool{Name: t.GetName(), Description: t.GetDescription()}
		if p := t.GetParameters(); p != nil {
			b, err := protojson.Marshal(p)
			switch {
			case err != nil:
				v.Add(f+".parameters", rpcerror.RuleBadFormat, "must be a JSON Schema object: %v", err)
			case len(b) > maxToolSchemaBytes:
				v.Add(f+".parameters", rpcerror.RuleTooLong, "must be at most %d bytes as JSON, got %d", maxToolSchemaBytes, len(b))
			}
			tool.Parameters = b
		}
		out = append(out, tool)
	}
	return out
}

// CheckConverseAudio records a violation unless an audio message is within
// its size limit.
func CheckConverseAudio(v *rpcerror.Violations, audio []byte) {
	if len(audio) > maxConverseAudio {
		v.Add("audio", rpcerror.RuleTooLong, "must be at most %d bytes per message, got %d", maxConverseAudio, len(audio))
	}
}

// CheckToolResult records what is wrong with a tool result.
func CheckToolResult(v *rpcerror.Violations, r *speechv1.ToolResult) {
	switch id := r.GetCallId(); {
	case id == "":
		v.Add("call_id", rpcerror.RuleRequired, "is required: the call_id of the tool_call answered")
	case len(id) > maxCallID:
		v.Add("call_id", rpcerror.RuleTooLong, "must be at most %d characters, got %d", maxCallID, len(id))
	}
	if n := utf8.RuneCountInString(r.GetOutput()); n > maxToolOutput {
		v.Add("output", rpcerror.RuleTooLong, "must be at most %d characters, got %d", maxToolOutput, n)
	}
}

// ResponseStatus is a Hydra response status in the contract's terms.
func ResponseStatus(s string) speechv1.ResponseStatus {
	return map[string]speechv1.ResponseStatus{
		"completed": speechv1.ResponseStatus_RESPONSE_STATUS_COMPLETED, "cancelled": speechv1.ResponseStatus_RESPONSE_STATUS_CANCELLED,
		"incomplete": speechv1.ResponseStatus_RESPONSE_STATUS_INCOMPLETE, "failed": speechv1.ResponseStatus_RESPONSE_STATUS_FAILED,
	}[s]
}
