#!/usr/bin/env python3
"""The multi-node examples an operator copies (deploy/cluster, docs/DEPLOYMENT.md)
and the systemd units (deploy/systemd) are checked by the programs that will
read them:

  - every daemon of every node accepts the node's /etc/mxcluster as the
    operator assembles it (the shared mxcluster.conf + the node's files),
    and a misspelt setting in an included file is refused with its file:line;
  - the files agree with each other: each store's endpoints are the ones the
    clients list for its shard, every store pair has one store file per
    member, corosync's nodes and HAProxy's servers are the nodes;
  - corosync -t accepts corosync.conf, haproxy -c accepts haproxy.cfg;
  - systemd-analyze verify accepts every unit without a warning.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

SOURCE = os.environ.get("MX_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("MX_BUILD_DIR", os.path.join(SOURCE, "build", "release"))
CLUSTER = os.path.join(SOURCE, "deploy", "cluster")
NODES = ("node1", "node2", "node3")
DAEMONS = {  # binary -> path in the build tree
    "mx-inbound": "inbound/mx-inbound",
    "mx-delivery": "delivery/mx-delivery",
    "mx-imapd": "imap-frontend/mx-imapd",
    "mx-ha": "ha/mx-ha",
    "mx-store": "store/mx-store",
}


def read(path):
    with open(path) as f:
        return f.read()


def strip_comments(text):
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def check_config(binary, conf):
    return subprocess.run([os.path.join(BUILD, DAEMONS[binary]), "-t", "-c", conf],
                          capture_output=True, text=True, timeout=30)


class NodeConfigTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mx-deploy-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def etc(self, node):
        """/etc/mxcluster of NODE as the operator assembles it."""
        etc = os.path.join(self.tmp, node)
        os.makedirs(etc)
        shutil.copy(os.path.join(CLUSTER, "mxcluster.conf"), etc)
        for name in os.listdir(os.path.join(CLUSTER, node)):
            shutil.copy(os.path.join(CLUSTER, node, name), etc)
        return etc

    def test_every_daemon_accepts_its_node_files(self):
        stores = 0
        for node in NODES:
            etc = self.etc(node)
            for binary in ("mx-inbound", "mx-delivery", "mx-imapd", "mx-ha"):
                r = check_config(binary, os.path.join(etc, "mxcluster.conf"))
                self.assertEqual(r.returncode, 0, "%s on %s: %s" % (binary, node, r.stderr))
                self.assertIn("configuration OK", r.stdout)
            for name in sorted(os.listdir(etc)):
                if name.startswith("store-"):
                    r = check_config("mx-store", os.path.join(etc, name))
                    self.assertEqual(r.returncode, 0, "%s on %s: %s" % (name, node, r.stderr))
                    stores += 1
        self.assertEqual(stores, 4, "two shards, each on two nodes")

    def test_a_typo_in_an_included_file_is_refused(self):
        etc = self.etc("node1")
        path = os.path.join(etc, "store-shard1.conf")
        text = read(path)
        self.assertIn("replication_mode =", text)
        with open(path, "w") as f:
            f.write(text.replace("replication_mode =", "replication_mod ="))
        r = check_config("mx-store", path)
        self.assertNotEqual(r.returncode, 0)
        self.assertRegex(r.stderr, r"store-shard1\.conf:\d+: store\.replication_mod: unknown setting")
        with open(os.path.join(etc, "node.conf"), "a") as f:
            f.write("nodes = 3;\n")
        r = check_config("mx-ha", os.path.join(etc, "mxcluster.conf"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("nodes: unknown setting", r.stderr)


class ConsistencyTest(unittest.TestCase):
    """What -t cannot see: the files must describe one cluster."""

    def setUp(self):
        self.shared = strip_comments(read(os.path.join(CLUSTER, "mxcluster.conf")))
        self.stores = {}  # (node, shard) -> text
        for node in NODES:
            for name in os.listdir(os.path.join(CLUSTER, node)):
                m = re.fullmatch(r"store-(\w+)\.conf", name)
                if m:
                    self.stores[(node, m.group(1))] = strip_comments(
                        read(os.path.join(CLUSTER, node, name)))

    def setting(self, text, name):
        m = re.search(r"\b%s\s*=\s*\"([^\"]*)\"" % re.escape(name), text)
        self.assertIsNotNone(m, name)
        return m.group(1)

    def shard_lists(self, group):
        """{shard: (endpoints, events)} of GROUP's shards list."""
        body = re.search(r"^%s = \{(.*?)^\};" % group, self.shared, re.S | re.M).group(1)
        out = {}
        for m in re.finditer(r"\{\s*name = \"(\w+)\";(.*?)\}", body, re.S):
            lists = dict(re.findall(r"(endpoints|events) = \[([^\]]*)\]", m.group(2)))
            out[m.group(1)] = tuple(re.findall(r"\"([^\"]+)\"", lists.get(k, ""))
                                    for k in ("endpoints", "events"))
        return out

    def test_node_names_are_corosync_nodes(self):
        corosync = read(os.path.join(CLUSTER, "corosync.conf"))
        names = re.findall(r"^\s*name: (\S+)", corosync, re.M)
        self.assertEqual(names, list(NODES))
        for node in NODES:
            text = read(os.path.join(CLUSTER, node, "node.conf"))
            self.assertEqual(self.setting(text, "name"), node)

    def test_stores_are_where_their_clients_look(self):
        pairs = dict(re.findall(r"name = \"(\w+)\"; kind = \"store\"; members = \[([^\]]*)\]",
                                self.shared))
        self.assertEqual(sorted(pairs), ["shard1", "shard2"])
        for shard, members in pairs.items():
            members = re.findall(r"\"(\w+)\"", members)
            self.assertEqual(sorted(n for n, s in self.stores if s == shard), sorted(members),
                             "one store file per member of pair " + shard)
            for node in members:
                text = self.stores[(node, shard)]
                self.assertEqual(self.setting(text, "shard"), shard)
                self.assertEqual(self.setting(text, "pair"), shard)
                listen, publish = self.setting(text, "listen"), self.setting(text, "publish")
                for group in ("delivery", "imap", "inbound"):
                    endpoints, events = self.shard_lists(group)[shard]
                    self.assertIn(listen, endpoints, "%s.shards %s lacks %s" % (group, shard, listen))
                    if group == "imap":
                        self.assertIn(publish, events, "imap.shards %s lacks %s" % (shard, publish))

    def test_balancer_sends_to_every_imapd_with_the_agent(self):
        haproxy = read(os.path.join(CLUSTER, "haproxy.cfg"))
        agent_port = re.search(r"agent_listen = \"[^\"]*:(\d+)\"", self.shared).group(1)
        for port in (143, 993, 110, 995):
            servers = re.findall(r"^\s*server (\S+) [\d.]+:%d$" % port, haproxy, re.M)
            self.assertEqual(servers, list(NODES), "backend for port %d" % port)
        self.assertEqual(set(re.findall(r"agent-port (\d+)", haproxy)), {agent_port})
        # mx-imapd speaks PROXY v2 only
        self.assertEqual(set(re.findall(r"(?<![-\w])send-proxy[-\w]*", haproxy)), {"send-proxy-v2"})
        balancer = re.search(r"^# /etc/haproxy/haproxy.cfg on the balancer \(([\d.]+)\)",
                             haproxy, re.M).group(1)
        self.assertIn('"%s/32"' % balancer, self.shared, "imap.proxy_from must name the balancer")


class ToolsAcceptTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mx-deploy-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def test_corosync_accepts_corosync_conf(self):
        if shutil.which("corosync") is None and not os.path.exists("/usr/sbin/corosync"):
            self.skipTest("corosync not installed")
        key = os.path.join(self.tmp, "authkey")
        subprocess.run(["corosync-keygen", "-l", "-k", key], check=True, capture_output=True)
        # corosync -t wants a local address in the nodelist and the key: node1
        # becomes this host, the key a private file
        text = read(os.path.join(CLUSTER, "corosync.conf"))
        self.assertIn("ring0_addr: 192.0.2.11", text)
        text = text.replace("ring0_addr: 192.0.2.11", "ring0_addr: 127.0.0.1")
        text = text.replace("totem {", "totem {\n  keyfile: %s" % key, 1)
        conf = os.path.join(self.tmp, "corosync.conf")
        with open(conf, "w") as f:
            f.write(text)
        r = subprocess.run(["corosync", "-t", "-c", conf], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(conf, "a") as f:
            f.write("totem {\n  bogus\n}\n")
        r = subprocess.run(["corosync", "-t", "-c", conf], capture_output=True, text=True,
                           timeout=30)
        self.assertNotEqual(r.returncode, 0, "corosync -t must refuse a broken file")

    def test_haproxy_accepts_haproxy_cfg(self):
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        r = subprocess.run([haproxy, "-c", "-f", os.path.join(CLUSTER, "haproxy.cfg")],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_systemd_units_verify_without_warnings(self):
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            self.skipTest("systemd-analyze not installed")
        units_dir = os.path.join(BUILD, "systemd")
        units = sorted(os.listdir(units_dir))
        self.assertEqual(len(units), 5, units)
        for unit in units:
            text = read(os.path.join(units_dir, unit))
            # the installed paths do not exist here: the built binaries stand in
            for binary, built in DAEMONS.items():
                text = re.sub(r"/\S+/sbin/%s\b" % binary, os.path.join(BUILD, built), text)
            self.assertNotRegex(text, r"@[A-Z_]+@", "unconfigured @VAR@ in " + unit)
            path = os.path.join(self.tmp, unit)
            with open(path, "w") as f:
                f.write(text)
            r = subprocess.run([analyze, "verify", path], capture_output=True, text=True,
                               timeout=60)
            self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""), unit)


if __name__ == "__main__":
    unittest.main(verbosity=2, argv=sys.argv[:1])
