package server

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// pooledCodec is gRPC's protobuf codec, except that every message is
// encoded into a buffer from gRPC's pool, which the transport returns once
// the message is on the wire. gRPC's own codec pools only messages over
// 1 KiB and gives smaller ones a new slice each; a real-time audio message
// is 20 ms of audio (960 bytes at 24 kHz, 640 at 16 kHz), so every stream
// made 50 slices of garbage a second. Decoding is gRPC's.
type pooledCodec struct {
	encoding.CodecV2 // gRPC's, for Unmarshal and Name
	pool             mem.BufferPool
	// minPooled is the smallest buffer that goes back to the pool: a
	// smaller one is let go (see mem.NewBuffer), so small messages borrow
	// one this large.
	minPooled int
}

func newPooledCodec(pool mem.BufferPool) pooledCodec {
	minPooled := 64
	for mem.IsBelowBufferPoolingThreshold(minPooled) {
		minPooled *= 2
	}
	return pooledCodec{CodecV2: encoding.GetCodecV2(protoenc.Name), pool: pool, minPooled: minPooled}
}

// Marshal encodes v, a protobuf message, into a pooled buffer.
func (c pooledCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("proto: cannot marshal %T, which is not a proto.Message", v)
	}
	// Size caches the sizes of nested messages, which UseCachedSize then
	// reads instead of computing them again: m must not change in between,
	// and SendMsg's caller may not change it while SendMsg runs.
	size := proto.Size(m)
	buf := c.pool.Get(max(size, c.minPooled))
	out, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend((*buf)[:0], m)
	if err != nil {
		c.pool.Put(buf)
		return nil, err
	}
	*buf = out
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}, nil
}
