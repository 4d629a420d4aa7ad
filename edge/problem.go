package edge

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// problem is an RFC 9457 problem details body. Every response the gateway
// makes itself (no route, limits, upstream failures) carries one, so that
// clients can tell the gateway's errors from the API's.
type problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	Instance  string `json:"instance,omitempty"`
	Route     string `json:"route,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

// proxyError is an error made by the gateway, with what the client is told.
type proxyError struct {
	status int
	// proxyStatus is the RFC 9209 error type ("destination_unavailable",
	// "connection_timeout", ...); empty for errors that are not the proxy's
	// failure to reach the upstream (404 no route, 413, 431).
	proxyStatus string
	title       string
	detail      string
	close       bool // close the client connection after the answer
}

const problemTypeBase = "https://meridian.dev/problems/"

// writeProblem writes a problem+json answer. Proxy-Status is set for errors
// about reaching the upstream (RFC 9209), naming this node. It returns the
// number of body bytes written.
func writeProblem(w http.ResponseWriter, r *http.Request, pe *proxyError, route, reqID, proxyName string) int64 {
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Length")
	if pe.proxyStatus != "" {
		v := proxyName + "; error=" + pe.proxyStatus
		if pe.detail != "" {
			v += "; details=" + strconv.Quote(pe.detail)
		}
		h.Set("Proxy-Status", v)
	}
	if pe.close {
		h.Set("Connection", "close")
	}
	typ := "about:blank"
	if pe.proxyStatus != "" {
		typ = problemTypeBase + pe.proxyStatus
	} else if pe.status == http.StatusNotFound {
		typ = problemTypeBase + "no-route"
	}
	body, _ := json.Marshal(problem{
		Type:      typ,
		Title:     pe.title,
		Status:    pe.status,
		Detail:    pe.detail,
		Instance:  r.URL.Path,
		Route:     route,
		RequestID: reqID,
	})
	body = append(body, '\n')
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(pe.status)
	if r.Method == http.MethodHead {
		return 0
	}
	n, _ := w.Write(body)
	return int64(n)
}
