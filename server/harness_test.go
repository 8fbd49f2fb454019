package server_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// callerKey is the caller's own Smallest key in passthrough tests.
const callerKey = "sk_caller_secret_0123456789"
