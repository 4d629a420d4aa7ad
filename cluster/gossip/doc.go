// Package gossip is Meridian's membership plane: who is in the cluster,
// where each node is and what it advertises (Meta), whether it is alive, and
// small cluster-wide broadcasts plus direct node-to-node messages. It wraps
// hashicorp/memberlist (SWIM failure detection, gossip, push/pull sync).
//
// Consumers (global rate limiter, cache ring, geo routing) declare the small
// interface they need, for example
//
//	type peers interface {
//		Members() []gossip.Member
//		Subscribe(buffer int) (<-chan gossip.Event, func())
//	}
//
// and *Members satisfies it.
//
// # States and events
//
// A member is alive, suspect (a probe by this node failed; memberlist's
// suspicion timer runs), dead (suspicion expired) or left (it called Leave).
// memberlist's own callbacks do not tell a leave from a failure, nor report
// suspicion, so this package adds: a leave intent, broadcast by Leave before
// memberlist's leave and also exchanged in push/pull syncs (a failure seen
// before the intent arrives is corrected to "left" with a second event,
// EventLeave); and suspicion taken from this node's own failed probes.
// Dead and left members stay in Members() for Tuning.DeadRetention.
//
// Subscribers never slow gossip: a full subscriber channel loses the event
// (Stats.DroppedEvents); Members() is always the current truth.
//
// # Messages
//
// Broadcast: small (MaxMessageSize), gossiped and relayed by every member once,
// so it reaches every live member within a few gossip intervals; meant for a
// few KB/s per node. BroadcastKeyed lets a newer value replace a queued older
// one. Send: to one member, reliable over TCP (any size: use it for bulk
// state) or best effort over UDP. Handlers run on one goroutine per Members.
// Malformed frames and metadata from peers are logged, counted and dropped.
//
// # Encryption and key rotation
//
// With Config.Keys, all gossip (UDP and TCP) is AES-GCM encrypted with
// Keys[0] and any installed key decrypts. A node with a wrong key, or none,
// cannot join an encrypted cluster; the refusing side logs the failed
// decryption. InstallKey, UseKey and RemoveKey change only the local keyring;
// rotating a cluster's key is three rounds, each finished on every node before
// the next starts:
//
//  1. InstallKey(new) on every node. All nodes now decrypt both keys.
//  2. UseKey(new) on every node. Nodes now encrypt with new; laggards still
//     on old are understood because everyone still has old installed.
//  3. RemoveKey(old) on every node. Only now can a node with just the new
//     key join, and the old key is useless to an attacker.
//
// Persist the key list (new first) in each node's configuration before step 3
// so a restart comes back with the right keys.
package gossip
