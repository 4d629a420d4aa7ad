package node

import (
	"strings"

	"github.com/meridian-gw/meridian/cluster"
	"github.com/meridian-gw/meridian/cluster/gossip"
	"github.com/prometheus/client_golang/prometheus"
)

// clusterCollector exposes the cluster's state as this node sees it, so
// that an alert can say "no leader" or "a voter is gone" without parsing
// /cluster/members.
type clusterCollector struct{ c *cluster.Cluster }

var (
	clusterLeaderDesc = prometheus.NewDesc("meridian_cluster_leader_known",
		"1 when this node knows a Raft leader (0: no quorum, or an election is on).", nil, nil)
	clusterRoleDesc = prometheus.NewDesc("meridian_cluster_raft_state",
		"This node's Raft state: 1 for the current one (leader, follower, candidate, shutdown).", []string{"state"}, nil)
	clusterVotersDesc = prometheus.NewDesc("meridian_cluster_raft_voters",
		"Voters in the Raft configuration, reachable or not.", nil, nil)
	clusterMembersDesc = prometheus.NewDesc("meridian_cluster_members",
		"Members by gossip state.", []string{"state"}, nil)
)

func (cc clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- clusterLeaderDesc
	ch <- clusterRoleDesc
	ch <- clusterVotersDesc
	ch <- clusterMembersDesc
}

func (cc clusterCollector) Collect(ch chan<- prometheus.Metric) {
	st := cc.c.Store
	known := 0.0
	if id, _ := st.Leader(); id != "" {
		known = 1
	}
	ch <- prometheus.MustNewConstMetric(clusterLeaderDesc, prometheus.GaugeValue, known)
	cur := st.State()
	for _, s := range []string{"Leader", "Follower", "Candidate", "Shutdown"} {
		v := 0.0
		if s == cur {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(clusterRoleDesc, prometheus.GaugeValue, v, strings.ToLower(s))
	}
	if servers, err := st.Servers(); err == nil {
		voters := 0
		for _, s := range servers {
			if s.Voter {
				voters++
			}
		}
		ch <- prometheus.MustNewConstMetric(clusterVotersDesc, prometheus.GaugeValue, float64(voters))
	}
	counts := map[gossip.State]int{gossip.StateAlive: 0, gossip.StateSuspect: 0, gossip.StateDead: 0, gossip.StateLeft: 0}
	for _, mb := range cc.c.Members.Members() {
		counts[mb.State]++
	}
	for s, n := range counts {
		ch <- prometheus.MustNewConstMetric(clusterMembersDesc, prometheus.GaugeValue, float64(n), string(s))
	}
}
