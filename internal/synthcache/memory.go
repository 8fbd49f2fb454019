package synthcache

import (
	"container/list"
	"sync"
	"time"
)

// blockSize is the unit the memory tier allocates: a chunk from the
// upstream client is at most 32 KiB, so one always fits a block.
const blockSize = 64 << 10

// memory is the in-process tier: an LRU of entries whose audio lives in
// blocks of a pool that never grows past the byte budget, outside the Go
// heap where the system allows (see offHeap). Blocks of an evicted entry go
// back to the pool, not to the garbage collector, so that a cache that
// churns keeps to its budget in the process's memory too. An entry being
// read is not recycled until its readers are done.
type memory struct {
	budget   int // in blocks
	maxEntry int // bytes
	ttl      time.Duration
	now      func() time.Time
	onEvict  func()
	newBlock func() []byte

	mu        sync.Mutex
	free      [][]byte // blocks ready for use
	allocated int      // blocks made so far
	lru       *list.List
	index     map[Key]*list.Element
	stored    int // bytes of audio held
}

// entry is one synthesis's audio and what the caller is told of it.
type entry struct {
	key  Key
	meta meta
	// chunks are the audio as it is served: the upstream's chunks joined
	// up to a block each, since chunks never straddle blocks. A hit then
	// sends few messages, at memory speed.
	chunks  [][]byte // slices of blocks
	blocks  [][]byte
	size    int
	expires time.Time
	readers int
	evicted bool // out of the index; its blocks are freed by the last reader
	// abandoned: a pending entry that ran out of room; it is never indexed.
	abandoned bool
	cur       []byte // the block a pending entry writes into
}

// meta is what an entry says of its synthesis.
type meta struct {
	RequestID string `json:"request_id,omitempty"`
	SessionID string `json:"session_id,omitempty"`
	// SampleRate is the audio's when the server chose it; 0: as asked.
	SampleRate int `json:"sample_rate,omitempty"`
	Chunks     int `json:"chunks"`
	Bytes      int `json:"bytes"`
}

func newMemory(budgetBytes, maxEntry int, ttl time.Duration, onEvict func()) *memory {
	return &memory{budget: budgetBytes / blockSize, maxEntry: maxEntry, ttl: ttl, now: time.Now, onEvict: onEvict,
		newBlock: offHeap(), lru: list.New(), index: map[Key]*list.Element{}}
}

// get returns key's entry, counted as read until release.
func (m *memory) get(k Key) (*entry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.index[k]
	if !ok {
		return nil, false
	}
	e := el.Value.(*entry)
	if m.now().After(e.expires) {
		m.removeLocked(el)
		return nil, false
	}
	m.lru.MoveToFront(el)
	e.readers++
	return e, true
}

// has reports whether key has an entry, without reading it.
func (m *memory) has(k Key) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.index[k]
	return ok && !m.now().After(el.Value.(*entry).expires)
}

// release ends a read of e.
func (m *memory) release(e *entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e.readers--
	if e.evicted && e.readers == 0 {
		m.free = append(m.free, e.blocks...)
		e.blocks, e.chunks = nil, nil
	}
}

// put stores the audio of key, copied into blocks, evicting the least
// recently used entries to make room. It stores nothing when the audio is
// larger than the largest entry allowed, or room cannot be made (every
// entry is being read).
func (m *memory) put(k Key, md meta, chunks [][]byte) bool {
	size := 0
	for _, c := range chunks {
		size += len(c)
	}
	if size == 0 || size > m.maxEntry || m.budget == 0 {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.index[k]; ok {
		return false // stored meanwhile by another flight
	}
	need := blocksFor(chunks)
	if need > m.budget {
		return false
	}
	for len(m.free)+(m.budget-m.allocated) < need {
		back := m.lru.Back()
		if back == nil {
			return false // the rest is still being read
		}
		m.removeLocked(back)
		m.onEvict()
	}
	e := &entry{key: k, meta: md, size: size, expires: m.now().Add(m.ttl)}
	for _, run := range runs(chunks, m.block) {
		e.blocks = append(e.blocks, run[:blockSize])
		e.chunks = append(e.chunks, run[:len(run):len(run)])
	}
	m.index[k] = m.lru.PushFront(e)
	m.stored += size
	return true
}

// runs copies chunks into blocks from block, each chunk whole in one
// block, and returns each block's part used.
func runs(chunks [][]byte, block func() []byte) [][]byte {
	var out [][]byte
	var cur []byte
	for _, c := range chunks {
		if cur == nil || len(cur)+len(c) > blockSize {
			if cur != nil {
				out = append(out, cur)
			}
			cur = block()
		}
		cur = append(cur, c...)
	}
	if cur != nil {
		out = append(out, cur)
	}
	return out
}

// pending starts an entry that fills as its synthesis arrives, through
// write, and is indexed by commit. Until then it is out of the index, held
// by its creator (one reader, released with release); nil when the tier
// keeps nothing.
func (m *memory) pending(k Key) *entry {
	if m.budget == 0 {
		return nil
	}
	return &entry{key: k, evicted: true, readers: 1}
}

// retain adds a reader to an entry that is already held.
func (m *memory) retain(e *entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e.readers++
}

// write copies b into a pending entry's blocks and returns the copy; nil
// when the entry has become larger than allowed or no room can be made,
// and is abandoned: what it holds is freed when its readers are done.
func (m *memory) write(e *entry, b []byte) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.abandoned || e.size+len(b) > m.maxEntry {
		e.abandoned = true
		return nil
	}
	if e.cur == nil || len(e.cur)+len(b) > blockSize {
		for len(m.free) == 0 && m.allocated >= m.budget {
			back := m.lru.Back()
			if back == nil {
				e.abandoned = true // the rest is still being read
				return nil
			}
			m.removeLocked(back)
			m.onEvict()
		}
		if e.cur != nil {
			e.chunks = append(e.chunks, e.cur[:len(e.cur):len(e.cur)])
		}
		e.cur = m.block()
		e.blocks = append(e.blocks, e.cur[:blockSize])
	}
	start := len(e.cur)
	e.cur = append(e.cur, b...)
	e.size += len(b)
	return e.cur[start:len(e.cur):len(e.cur)]
}

// commit indexes a pending entry that holds a whole synthesis, unless it
// was abandoned or another entry for its key was stored meanwhile.
func (m *memory) commit(e *entry, md meta) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.abandoned || e.size == 0 || !e.evicted {
		return false
	}
	if _, ok := m.index[e.key]; ok {
		return false
	}
	if e.cur != nil {
		e.chunks = append(e.chunks, e.cur[:len(e.cur):len(e.cur)])
		e.cur = nil
	}
	e.meta, e.evicted, e.expires = md, false, m.now().Add(m.ttl)
	e.meta.Chunks = len(e.chunks)
	m.index[e.key] = m.lru.PushFront(e)
	m.stored += e.size
	return true
}

// blocksFor is how many blocks chunks take, each chunk whole in one block.
func blocksFor(chunks [][]byte) int {
	n, used := 0, blockSize
	for _, c := range chunks {
		if used+len(c) > blockSize {
			n, used = n+1, 0
		}
		used += len(c)
	}
	return n
}

// block takes a free block, or makes one. m.mu is held, and put has made
// sure there is room.
func (m *memory) block() []byte {
	if n := len(m.free); n > 0 {
		b := m.free[n-1]
		m.free = m.free[:n-1]
		return b[:0]
	}
	m.allocated++
	return m.newBlock()
}

// removeLocked takes an entry out of the index; its blocks are free now,
// or when its last reader is done.
func (m *memory) removeLocked(el *list.Element) {
	e := el.Value.(*entry)
	m.lru.Remove(el)
	delete(m.index, e.key)
	m.stored -= e.size
	e.evicted = true
	if e.readers == 0 {
		m.free = append(m.free, e.blocks...)
		e.blocks, e.chunks = nil, nil
	}
}

// usage returns the bytes of audio stored and of blocks made.
func (m *memory) usage() (stored, reserved int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stored, m.allocated * blockSize
}
