package server

import (
	"bytes"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	speechv1 "github.com/speechgate/speechgate/gen/speech/v1"
)

// countingPool is gRPC's default pool, counting what is taken and given back.
type countingPool struct {
	mem.BufferPool
	mu        sync.Mutex
	got, puts int
}

func (p *countingPool) Get(n int) *[]byte {
	p.mu.Lock()
	p.got++
	p.mu.Unlock()
	return p.BufferPool.Get(n)
}

func (p *countingPool) Put(b *[]byte) {
	p.mu.Lock()
	p.puts++
	p.mu.Unlock()
	p.BufferPool.Put(b)
}

func TestPooledCodecEncodesAsProtoAndReturnsEveryBuffer(t *testing.T) {
	t.Parallel()
	off, dur := uint32(40), uint32(20)
	tests := []struct {
		name string
		msg  proto.Message
	}{
		{"empty", &speechv1.SynthesizeResponse{}},
		{"small", &speechv1.SynthesizeResponse{Event: &speechv1.SynthesizeResponse_Totals{Totals: &speechv1.SynthesisTotals{AudioBytes: 7}}}},
		{"20 ms of 24 kHz audio", &speechv1.SynthesizeResponse{Event: &speechv1.SynthesizeResponse_Audio{Audio: &speechv1.AudioChunk{
			Data: bytes.Repeat([]byte{1, 2}, 480), Sequence: 3, OffsetMs: &off, DurationMs: &dur}}}},
		{"64 KiB", &speechv1.SynthesizeResponse{Event: &speechv1.SynthesizeResponse_Audio{Audio: &speechv1.AudioChunk{Data: bytes.Repeat([]byte{9}, 64<<10)}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pool := &countingPool{BufferPool: mem.DefaultBufferPool()}
			c := newPooledCodec(pool)
			data, err := c.Marshal(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if got := data.Materialize(); !bytes.Equal(got, want) {
				t.Errorf("encoding differs from proto.Marshal's: %d bytes, want %d", len(got), len(want))
			}
			back := tt.msg.ProtoReflect().New().Interface()
			if err := c.Unmarshal(data, back); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.msg, back, protocmp.Transform()); d != "" {
				t.Errorf("round trip (-sent +decoded):\n%s", d)
			}
			data.Free() // as the transport does once the message is written
			if pool.got != 1 || pool.puts != 1 {
				t.Errorf("pool: %d buffers taken, %d given back; want 1 and 1", pool.got, pool.puts)
			}
		})
	}
}

func TestPooledCodecRefusesWhatIsNotProto(t *testing.T) {
	t.Parallel()
	if _, err := newPooledCodec(mem.DefaultBufferPool()).Marshal("text"); err == nil {
		t.Error("Marshal(string) succeeded, want an error")
	}
}
