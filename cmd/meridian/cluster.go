package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/meridian-gw/meridian/cluster"
	"github.com/meridian-gw/meridian/cluster/pki"
	"github.com/meridian-gw/meridian/node"
)

const clusterUsage = `usage:
  meridian cluster status [-admin URL] [-token T | -token-file F] [-json]
                                                         members, gossip state, Raft role, config version
  meridian cluster remove [-admin URL] [-token T | -token-file F] NAME
                                                         take the Raft seat of a node gone for good
                                                         (the leader's admin API, found through any node's)
  meridian cluster ca create -dir DIR                    create the cluster CA (ca.crt, ca.key)
  meridian cluster cert -ca DIR -name NODE [-ip IP,..] [-dns NAME,..] [-out DIR]
                                                         issue a node's certificate for Raft and forwarding
  meridian cluster keygen                                print a new gossip encryption key (base64)
`

// clusterMisused says what is wrong with a cluster command line, then the
// usage.
func clusterMisused(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "meridian: "+format+"\n", args...)
	fmt.Fprint(stderr, clusterUsage)
	return 2
}

func clusterCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return clusterMisused(stderr, "cluster needs a command (status, remove, ca create, cert, keygen)")
	}
	if isHelp(args[0]) || args[0] == "help" {
		fmt.Fprint(stdout, clusterUsage)
		return 0
	}
	switch args[0] {
	case "status":
		return clusterStatus(args[1:], stdout, stderr)
	case "remove":
		return clusterRemove(args[1:], stdout, stderr)
	case "ca":
		fs := flag.NewFlagSet("cluster ca create", flag.ContinueOnError)
		fs.SetOutput(stderr)
		dir := fs.String("dir", "", "directory for ca.crt and ca.key")
		if len(args) == 2 && isHelp(args[1]) {
			fmt.Fprint(stdout, clusterUsage)
			return 0
		}
		if len(args) < 2 {
			return clusterMisused(stderr, "cluster ca needs a command (create)")
		}
		if args[1] != "create" {
			return clusterMisused(stderr, "unknown cluster ca command %q (create)", args[1])
		}
		if err := fs.Parse(args[2:]); err != nil {
			return parseFailed(err)
		}
		if !noArgs(fs, stderr) {
			return 2
		}
		if *dir == "" {
			return clusterMisused(stderr, "cluster ca create needs -dir DIR")
		}
		if err := pki.CreateCA(*dir); err != nil {
			fmt.Fprintf(stderr, "meridian: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "cluster CA written to %s (keep ca.key secret; copy ca.crt to every node)\n", *dir)
		return 0
	case "cert":
		fs := flag.NewFlagSet("cluster cert", flag.ContinueOnError)
		fs.SetOutput(stderr)
		caDir := fs.String("ca", "", "directory of the cluster CA")
		name := fs.String("name", "", "node name")
		ips := fs.String("ip", "", "comma-separated IP addresses of the node")
		dns := fs.String("dns", "", "comma-separated DNS names of the node")
		out := fs.String("out", ".", "output directory")
		if err := fs.Parse(args[1:]); err != nil {
			return parseFailed(err)
		}
		if !noArgs(fs, stderr) {
			return 2
		}
		switch {
		case *caDir == "" && *name == "":
			return clusterMisused(stderr, "cluster cert needs -ca DIR and -name NODE")
		case *caDir == "":
			return clusterMisused(stderr, "cluster cert needs -ca DIR")
		case *name == "":
			return clusterMisused(stderr, "cluster cert needs -name NODE")
		}
		var ipList []net.IP
		for _, s := range splitList(*ips) {
			ip := net.ParseIP(s)
			if ip == nil {
				fmt.Fprintf(stderr, "meridian: invalid IP %q\n", s)
				return 2
			}
			ipList = append(ipList, ip)
		}
		if err := pki.IssueNodeCert(*caDir, *name, ipList, splitList(*dns), *out); err != nil {
			fmt.Fprintf(stderr, "meridian: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "wrote %s and %s\n", filepath.Join(*out, *name+".crt"), filepath.Join(*out, *name+".key"))
		return 0
	case "keygen":
		if len(args) == 2 && isHelp(args[1]) {
			fmt.Fprint(stdout, clusterUsage)
			return 0
		}
		if len(args) > 1 {
			fmt.Fprintf(stderr, "meridian: cluster keygen takes no arguments (got %q)\n", args[1:])
			return 2
		}
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			fmt.Fprintf(stderr, "meridian: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(key))
		return 0
	}
	return clusterMisused(stderr, "unknown cluster command %q", args[0])
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func clusterStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cluster status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	af := addAdminFlags(fs, "admin bearer token, needed when the admin API is not on loopback")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if !noArgs(fs, stderr) {
		return 2
	}
	base, tok, code := af.resolve(stderr)
	if code != 0 {
		return code
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/cluster/members", nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := af.client(10 * time.Second).Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "meridian: cannot reach the admin API at %s: %v\n", base, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != 200 {
		fmt.Fprintf(stderr, "meridian: %s\n%s", resp.Status, body)
		return 1
	}
	if *asJSON {
		stdout.Write(body)
		return 0
	}
	var members []cluster.MemberStatus
	if err := json.Unmarshal(body, &members); err != nil {
		fmt.Fprintf(stderr, "meridian: unexpected answer: %v\n", err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tREGION\tLOCATION\tGOSSIP\tRAFT\tCONFIG\tHTTP\tCLUSTER")
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, m := range members {
		version := fmt.Sprintf("v%d", m.ConfigVersion)
		if m.State != "alive" {
			version += " (last heard)" // gossip's word from before the member went quiet
		}
		location := fmt.Sprintf("%.2f,%.2f", m.Lat, m.Lon)
		if m.Lat == 0 && m.Lon == 0 {
			location = "-" // none configured (or not heard of): not a place at 0,0
		}
		if m.State == "unknown" {
			version = "-" // a Raft seat gossip has not told of: nothing heard
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, dash(m.Region), location, m.State, m.Raft, version, dash(m.HTTPAddr), dash(m.ClusterAddr))
	}
	tw.Flush()
	return 0
}

// clusterRemove asks the admin API to take a member's Raft seat away.
func clusterRemove(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cluster remove", flag.ContinueOnError)
	fs.SetOutput(stderr)
	af := addAdminFlags(fs, "admin bearer token")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if fs.NArg() != 1 || fs.Arg(0) == "" {
		fmt.Fprintln(stderr, "meridian: cluster remove takes one node name")
		return 2
	}
	base, tok, code := af.resolve(stderr)
	if code != 0 {
		return code
	}
	remove := func(base string) (int, string, error) {
		req, _ := http.NewRequest(http.MethodDelete, base+"/cluster/members/"+url.PathEscape(fs.Arg(0)), nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := af.client(30 * time.Second).Do(req)
		if err != nil {
			return 0, "", fmt.Errorf("cannot reach the admin API at %s: %v", base, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, resp.Status + "\n" + string(body), nil
	}
	code, answer, err := remove(base)
	if err == nil && code == http.StatusConflict {
		// A follower names the leader's admin API: the removal is the
		// leader's to make, so it goes there (with the same token).
		if _, rest, ok := strings.Cut(answer, "whose admin API is at "); ok {
			if f := strings.FieldsFunc(rest, func(r rune) bool { return r == '"' || r == ' ' || r == '\n' }); len(f) > 0 {
				leader := strings.TrimRight(f[0], ".,")
				fmt.Fprintf(stderr, "meridian: this node does not lead; sending the removal to the leader at %s\n", leader)
				code, answer, err = remove("http://" + leader)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "meridian: %v\n", err)
		return 1
	}
	if code != http.StatusNoContent {
		fmt.Fprintf(stderr, "meridian: %s", answer)
		return 1
	}
	fmt.Fprintf(stdout, "%s no longer holds a Raft seat\n", fs.Arg(0))
	return 0
}

func devCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nodes := decimalFlag(fs, "nodes", 3, "number of nodes, 1-9 (a decimal `int`)")
	dir := fs.String("dir", "", "where the nodes keep their state (default: the user's cache dir + /meridian/dev, or dev-OFFSET with -port-offset)")
	offset := decimalFlag(fs, "port-offset", 0, "added to every port (HTTP 8081.., admin 9911.., Raft 7001.., gossip 7947..), to run beside other services; 0-55000 (a decimal `int`)")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if !noArgs(fs, stderr) {
		return 2
	}
	if *offset < 0 || *offset > 55000 {
		fmt.Fprintf(stderr, "meridian: -port-offset must be between 0 and 55000 (got %d)\n", *offset)
		return 2
	}
	if *nodes < 1 || *nodes > 9 {
		fmt.Fprintf(stderr, "meridian: -nodes must be between 1 and 9 (got %d)\n", *nodes)
		return 2
	}
	if *dir == "" {
		c, err := os.UserCacheDir()
		if err != nil {
			fmt.Fprintf(stderr, "meridian: %v\n", err)
			return 1
		}
		// The Raft state remembers its peers' addresses: another offset
		// gets its own directory.
		name := "dev"
		if *offset != 0 {
			name = fmt.Sprintf("dev-%d", *offset)
		}
		*dir = filepath.Join(c, "meridian", name)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	node.RouteStandardLog(log)
	dc, err := node.StartDev(*dir, *nodes, *offset, log)
	if err != nil {
		fmt.Fprintf(stderr, "meridian: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "meridian dev: %d nodes on loopback, state and configs in %s\n\n", len(dc.Nodes), dc.Dir)
	tw := tabwriter.NewWriter(stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tHTTP\tADMIN\tCONFIG FILE")
	for i, n := range dc.Nodes {
		fmt.Fprintf(tw, "dev-%d\thttp://%s\thttp://%s\t%s\n", i+1, n.ProxyAddr(), n.AdminAddr(), dc.Files[i])
	}
	tw.Flush()
	h, a, _, _ := node.DevPorts(2, *offset)
	// The hint names the binary as it was run (bin/meridian after make
	// build), so it can be pasted; a go run binary gets its plain name.
	prog := os.Args[0]
	if strings.Contains(prog, "go-build") {
		prog = "meridian"
	}
	fmt.Fprintf(stdout, "\ntry:\n  curl -s localhost:%d/hello\n  %s cluster status -admin http://127.0.0.1:%d\n  %s config apply -admin http://127.0.0.1:%d -token-file %s -f FILE   # through any node\n\nCtrl-C drains and stops every node.\n",
		h, prog, a, prog, a, filepath.Join(dc.Dir, "admin-token"))
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	<-sigs
	signal.Stop(sigs)
	dc.Stop()
	return 0
}

// decimalInt is an int flag written in decimal only: flag.Int would read
// "010" as 8 and "0x10" as 16, which nobody means by a port offset.
type decimalInt struct{ p *int }

func (d decimalInt) String() string {
	if d.p == nil {
		return "0"
	}
	return strconv.Itoa(*d.p)
}

func (d decimalInt) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("not a decimal integer")
	}
	*d.p = n
	return nil
}

func decimalFlag(fs *flag.FlagSet, name string, value int, usage string) *int {
	p := new(int)
	*p = value
	fs.Var(decimalInt{p}, name, usage)
	return p
}
