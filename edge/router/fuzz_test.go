package router

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// fuzzRoutes is a fixed table covering every host tier, path kind and
// condition type, with deliberate overlaps so that precedence matters for
// many inputs.
var fuzzRoutes = []Route{
	{Path: "/", Kind: PathPrefix},
	{Path: "/api", Kind: PathPrefix},
	{Path: "/api/", Kind: PathPrefix, Methods: []string{"POST"}},
	{Path: "/api/v1/users/{id}", Kind: PathTemplate},
	{Path: "/api/v1/users/me", Kind: PathExact},
	{Path: "/api/v1/users/{id}/{rest...}", Kind: PathTemplate},
	{Path: "/api/{version}/users/{id}", Kind: PathTemplate, Headers: []HeaderMatch{{Name: "X-A", Prefix: "a"}}},
	{Path: "/{all...}", Kind: PathTemplate, Hosts: []string{"*.example.com"}},
	{Path: "/", Kind: PathPrefix, Hosts: []string{"*.b.example.com"}, Query: []QueryMatch{{Name: "q", Present: true}}},
	{Path: "/static/", Kind: PathPrefix, Hosts: []string{"example.com", "www.example.com"}},
	{Path: "/", Kind: PathExact, Hosts: []string{"example.com"}},
	{Path: "/x/{a}/{b}", Kind: PathTemplate, Hosts: []string{"example.com"}, Methods: []string{"GET", "PUT"}},
	{Path: "/x/{a}/y", Kind: PathTemplate, Hosts: []string{"example.com"}, Query: []QueryMatch{{Name: "v", Regex: regexp.MustCompile(`^[0-9]+$`)}}},
	{Path: "/x//", Kind: PathExact},
	{Path: "/x/", Kind: PathTemplate},
	{Path: "/{a}/", Kind: PathTemplate, Headers: []HeaderMatch{{Name: "x-a", Exact: "1"}}},
	{Path: "/{a}/{b...}", Kind: PathTemplate, Hosts: []string{"[::1]", "127.0.0.1"}},
}

func FuzzMatch(f *testing.F) {
	for _, seed := range [][5]string{
		{"example.com", "/", "GET", "", ""},
		{"Example.COM:80", "/x/1/y", "GET", "v=12", ""},
		{"a.b.example.com", "/anything/at/all", "DELETE", "q", ""},
		{"www.example.com", "/static/app.js", "", "", "a1"},
		{"other", "/api/v1/users/me", "POST", "", ""},
		{"other", "/api/v2/users/7", "GET", "", "ab"},
		{"other", "/api/v1/users/7/a/b", "GET", "", ""},
		{"[::1]:443", "/a/b/c", "GET", "", ""},
		{"127.0.0.1", "/a/", "GET", "", "1"},
		{"x.example.com.", "//", "GET", "q=%zz;", ""},
		{"", "/x//", "", "", ""},
		{"", "", "", "", ""},
		{"host", "no-slash", "GET", "", ""},
	} {
		f.Add(seed[0], seed[1], seed[2], seed[3], seed[4])
	}
	tbl, err := New(fuzzRoutes)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, host, path, method, rawQuery, headerA string) {
		r := &http.Request{Method: method, Header: http.Header{}, URL: &url.URL{RawQuery: rawQuery}}
		if headerA != "" {
			r.Header["X-A"] = strings.Split(headerA, ",")
		}
		got, ok := tbl.Match(r, host, path)
		want, wantOK := refMatch(fuzzRoutes, r, host, path)
		if !sameResult(got, ok, want, wantOK) {
			t.Fatalf("Match(%q %q %q query %q X-A %q):\ngot  %s\nwant %s", method, host, path, rawQuery, headerA,
				fmtResult(got, ok, fuzzRoutes), fmtResult(want, wantOK, fuzzRoutes))
		}
	})
}

func FuzzParseTemplate(f *testing.F) {
	for _, s := range []string{
		"/", "/users/{id}", "/files/{path...}", "/a//{b}/", "/{a}/{b}/{c...}",
		"/{a", "/a}", "/{a}{b}", "/{a...}/b", "/{a}/{a}", "/{1}", "", "x", "/{}", "/{...}", "/{_}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tmpl, err := ParseTemplate(s)
		_, newErr := New([]Route{{Path: s, Kind: PathTemplate}})
		if (err == nil) != (newErr == nil) {
			t.Fatalf("ParseTemplate(%q) error %v but New error %v; want both or neither", s, err, newErr)
		}
		if err != nil {
			return
		}
		vars := tmpl.Vars()

		// Expanding every variable to its own placeholder reproduces the
		// template text.
		var self Params
		for i, v := range vars {
			ph := "{" + v + "}"
			if i == len(vars)-1 && strings.HasSuffix(s, "...}") {
				ph = "{" + v + "...}"
			}
			self = append(self, Param{Name: v, Value: ph})
		}
		if got := tmpl.Expand(self); got != s {
			t.Fatalf("ParseTemplate(%q).Expand(placeholders) = %q; want the template back", s, got)
		}

		// A path produced by Expand is matched by a route with the same
		// template, capturing exactly the values that went in.
		var in Params
		for i, v := range vars {
			val := fmt.Sprintf("v%d", i)
			if i == len(vars)-1 && strings.HasSuffix(s, "...}") {
				val += "/tail"
			}
			in = append(in, Param{Name: v, Value: val})
		}
		path := tmpl.Expand(in)
		tbl, err := New([]Route{{Path: s, Kind: PathTemplate}})
		if err != nil {
			t.Fatal(err)
		}
		res, ok := tbl.Match(nil, "", path)
		if !ok {
			t.Fatalf("template %q does not match its own expansion %q", s, path)
		}
		if len(res.Params) != len(in) {
			t.Fatalf("template %q on %q: got params %v; want %v", s, path, res.Params, in)
		}
		for i, p := range res.Params {
			if p.Name != in[i].Name || p.Value != in[i].Value {
				t.Fatalf("template %q on %q: got params %v; want %v", s, path, res.Params, in)
			}
			if p.Off < 0 || p.Off+len(p.Value) > len(path) || path[p.Off:p.Off+len(p.Value)] != p.Value {
				t.Fatalf("template %q on %q: param %q has offset %d, which does not hold its value", s, path, p.Name, p.Off)
			}
		}
	})
}
