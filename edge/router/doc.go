// Package router is Meridian's route table: given a request it picks the
// one configured route that should handle it, by host, path, method,
// headers and query parameters.
//
// # Job and flow
//
// The gateway compiles its configuration into a []Route and calls New once
// per configuration version. New validates every route (reporting each
// mistake with the route's index), canonicalises hosts and header names,
// and builds an immutable index. The HTTP hot path then calls Table.Match
// for every request, concurrently and without locks; a configuration
// reload builds a new Table and swaps it in atomically, so in-flight
// requests keep the table they started with.
//
// The index never scans all routes:
//
//   - Hosts: exact hosts live in a map; wildcard hosts ("*.example.com")
//     live in a map keyed by their suffix (".example.com"), probed at each
//     dot of the request host from the left, which visits the matching
//     suffixes longest first; routes without hosts form a third tier.
//   - Paths: each host tier has a segment trie. A node has literal children
//     in a map, one parameter child ({name}) and a list of catch-all
//     routes ({name...}). Exact and prefix routes hang off the nodes
//     reached through literal children; template routes off the node where
//     their last segment ends.
//
// Match walks the literal chain once (serving exact and prefix routes),
// searches the template branches depth first (literal, then parameter,
// then catch-all), and checks the method, header and query conditions of
// the candidates in precedence order, stopping at the first one whose
// conditions all hold. Every list of candidates is pre-sorted by New, so no
// sorting or scoring happens per request, and nothing is allocated unless
// template parameters are returned.
//
// # Matching rules
//
// A path is split on '/' into segments: "/" has one empty segment, "/a/b/"
// has "a", "b" and "". Exact paths match byte for byte. Prefixes match on
// segment boundaries: "/api" matches "/api", "/api/" and "/api/x" but not
// "/apix"; "/api/" matches "/api/" and "/api/x" but not "/api"; "/" matches
// every path. In templates, {name} matches exactly one non-empty segment
// and a final {name...} matches the non-empty rest of the path, slashes
// included ("/files/{p...}" matches "/files/a/b" with p = "a/b", but not
// "/files/" or "/files"). Parameter values are substrings of the path as
// passed to Match. Methods are compared exactly; a header or query
// parameter with several values matches if any value matches.
//
// # Precedence
//
// A route is a candidate only if ALL of its conditions match: host, path,
// method, headers and query. Among the candidates, the most specific wins,
// deterministically:
//
//  1. Host tier. Routes listing the request's exact host are tried first.
//     Only if none of them is a candidate are wildcard routes tried,
//     longest suffix first ("*.b.example.com" before "*.example.com"), and
//     only then routes with no hosts. A route listing several hosts takes
//     part in each of those tiers.
//  2. Path, within a tier: an exact path beats a template, which beats a
//     prefix. Between two templates, compare segment by segment from the
//     left: a literal segment beats a parameter, and a parameter beats a
//     catch-all; if all compared segments are equal, the template with
//     more segments wins. Between two prefixes, the longer prefix wins
//     ("/api/" beats "/api", which beats "/").
//  3. Then the route with more conditions wins, counting 1 if it restricts
//     methods, plus one per header matcher and one per query matcher.
//  4. Then declaration order: the lower index wins.
//
// The kind is taken as declared: a PathTemplate without variables ranks as
// a template, not as an exact path.
package router
