package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// cluster remove sent to a follower follows its answer to the leader's
// admin API, with the same token. (The admin APIs are stand-ins: what is
// tested is the command's handling of the follower's 409.)
func TestClusterRemoveFollowsToTheLeader(t *testing.T) {
	var got string
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Method + " " + r.URL.Path + " " + r.Header.Get("Authorization")
		w.WriteHeader(http.StatusNoContent)
	}))
	defer leader.Close()
	follower := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte(`{"title":"Conflict","status":409,"detail":"member not removed: only the leader removes members; the leader is n2, whose admin API is at ` +
			strings.TrimPrefix(leader.URL, "http://") + `"}`))
	}))
	defer follower.Close()
	var stdout, stderr bytes.Buffer
	code := run([]string{"cluster", "remove", "-admin", follower.URL, "-token", "0123456789abcdef0123", "n4"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d; stderr %s", code, stderr.String())
	}
	if want := "DELETE /cluster/members/n4 Bearer 0123456789abcdef0123"; got != want {
		t.Errorf("the leader got %q; want %q", got, want)
	}
	if !strings.Contains(stdout.String(), "n4 no longer holds a Raft seat") || !strings.Contains(stderr.String(), "sending the removal to the leader") {
		t.Errorf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}
}
