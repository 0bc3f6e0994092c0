// SPDX-License-Identifier: GPL-2.0-or-later
#include "libvirt/domain_xml.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "libvirt/libvirt_connection.h"
#include "support/harness.h"

namespace relink::libvirt {
namespace {

std::string fixture(const std::string& name) {
  return test::read_file(std::string(RELINK_FIXTURE_DIR) + "/libvirt/" + name);
}

MacAddress mac(const char* text) { return *parse_mac(text); }

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// An interface element parsed back the way parse_domain reads it.
DirectInterface reparse(const std::string& element) {
  auto d = parse_domain("<domain><name>x</name><devices>" + element + "</devices></domain>");
  EXPECT_TRUE(d) << d.error().message;
  if (!d) return {};
  EXPECT_TRUE(d->skipped.empty()) << d->skipped.front();
  EXPECT_EQ(d->interfaces.size(), 1u) << element;
  return d->interfaces.empty() ? DirectInterface{} : d->interfaces.front();
}

Domain live_domain() {
  auto d = parse_domain(fixture("domain_live_q35.xml"));
  EXPECT_TRUE(d) << d.error().message;
  return d ? *d : Domain{};
}

TEST(ParseDomain, LiveQ35Domain) {
  auto d = parse_domain(fixture("domain_live_q35.xml"));
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->name, "web01");
  EXPECT_EQ(d->uuid, "5c1e3f7a-2b8d-4e69-9f0a-7d2c6b41e8a3");
  EXPECT_EQ(d->id, 7);
  ASSERT_EQ(d->interfaces.size(), 2u);

  const DirectInterface& mq = d->interfaces[0];
  EXPECT_EQ(mq.mac, mac("52:54:00:6b:3c:01"));
  EXPECT_EQ(mq.source_dev, "enp1s0f0");
  EXPECT_EQ(mq.mode, "bridge");
  EXPECT_EQ(mq.model, "virtio");
  EXPECT_EQ(mq.alias, "net0");
  EXPECT_EQ(mq.target_dev, "macvtap0");
  EXPECT_EQ(mq.queues, 4u);
  EXPECT_TRUE(mq.link_up);
  EXPECT_EQ(mq.pci_address, "0000:01:00.0");
  EXPECT_EQ(mq.xml,
            "<interface type=\"direct\">\n"
            "      <mac address=\"52:54:00:6b:3c:01\"/>\n"
            "      <source dev=\"enp1s0f0\" mode=\"bridge\"/>\n"
            "      <target dev=\"macvtap0\"/>\n"
            "      <model type=\"virtio\"/>\n"
            "      <driver name=\"vhost\" queues=\"4\"/>\n"
            "      <alias name=\"net0\"/>\n"
            "      <address type=\"pci\" domain=\"0x0000\" bus=\"0x01\" slot=\"0x00\" function=\"0x0\"/>\n"
            "    </interface>");

  const DirectInterface& down = d->interfaces[1];
  EXPECT_EQ(down.mac, mac("52:54:00:6b:3c:03"));
  EXPECT_EQ(down.source_dev, "enp1s0f1");
  EXPECT_EQ(down.mode, "private");
  EXPECT_EQ(down.model, "e1000e");
  EXPECT_EQ(down.alias, "ua-backup");
  EXPECT_EQ(down.target_dev, "macvtap1");
  EXPECT_EQ(down.queues, 1u);
  EXPECT_FALSE(down.link_up);
  EXPECT_EQ(down.pci_address, "0000:07:00.0");

  // The network-type interface (2) is neither kept nor reported.
  EXPECT_EQ(d->skipped, (std::vector<std::string>{"interface 4: no valid <mac address>"}));
}

TEST(ParseDomain, SerializedInterfaceParsesOnItsOwn) {
  for (const DirectInterface& iface : live_domain().interfaces) {
    EXPECT_EQ(reparse(iface.xml), iface);
  }
}

TEST(ParseDomain, DefaultsAndInactiveDomain) {
  auto d = parse_domain(R"(<domain type='kvm'>
  <name>idle</name>
  <devices>
    <interface type='direct'>
      <mac address='52:54:00:00:00:01'/>
      <source dev='eth0'/>
      <driver queues='0'/>
    </interface>
  </devices>
</domain>)");
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->id, -1);
  EXPECT_EQ(d->uuid, "");
  ASSERT_EQ(d->interfaces.size(), 1u);
  const DirectInterface& i = d->interfaces[0];
  EXPECT_EQ(i.mode, "vepa");
  EXPECT_EQ(i.model, "");
  EXPECT_EQ(i.alias, "");
  EXPECT_EQ(i.target_dev, "");
  EXPECT_EQ(i.queues, 1u);
  EXPECT_TRUE(i.link_up);
  EXPECT_EQ(i.pci_address, "");
}

TEST(ParseDomain, NoDevicesNoInterfaces) {
  for (const char* xml : {"<domain><name>a</name></domain>", "<domain><name>a</name><devices/></domain>",
                          "<domain id='3'><name>a</name><devices><interface type='bridge'><mac "
                          "address='52:54:00:00:00:01'/><source bridge='br0'/></interface></devices></domain>"}) {
    auto d = parse_domain(xml);
    ASSERT_TRUE(d) << xml << ": " << d.error().message;
    EXPECT_TRUE(d->interfaces.empty()) << xml;
    EXPECT_TRUE(d->skipped.empty()) << xml;
  }
}

TEST(ParseDomain, PciAddressForms) {
  auto pci = [](const std::string& attrs) {
    auto d = parse_domain("<domain><name>x</name><devices><interface type='direct'><mac address='52:54:00:00:00:01'/>"
                          "<source dev='p0'/><address " + attrs + "/></interface></devices></domain>");
    EXPECT_TRUE(d) << d.error().message;
    return d && d->interfaces.size() == 1 ? d->interfaces[0].pci_address : std::string("?");
  };
  EXPECT_EQ(pci("type='pci' domain='0x0000' bus='0x1a' slot='0x1F' function='0x7'"), "0000:1a:1f.7");
  EXPECT_EQ(pci("type='pci' domain='0' bus='10' slot='3' function='1'"), "0000:0a:03.1");
  EXPECT_EQ(pci("type='pci' bus='0x02' slot='0x01'"), "0000:02:01.0");  // missing parts are 0
  EXPECT_EQ(pci("type='pci' domain='0x10000' bus='0x01' slot='0x00' function='0x0'"), "");
  EXPECT_EQ(pci("type='pci' domain='0x0000' bus='0x01' slot='0x20' function='0x0'"), "");
  EXPECT_EQ(pci("type='pci' domain='0x0000' bus='0x01' slot='0x00' function='8'"), "");
  EXPECT_EQ(pci("type='pci' domain='0x0000' bus='zz' slot='0x00' function='0x0'"), "");
  EXPECT_EQ(pci("type='pci' domain='0x0000' bus='-1' slot='0x00' function='0x0'"), "");
  EXPECT_EQ(pci("type='pci' domain='0x0000' bus='0x' slot='0x00' function='0x0'"), "");
  EXPECT_EQ(pci("type='ccw' cssid='0xfe' ssid='0x0' devno='0x0001'"), "");
}

TEST(ParseDomain, SkippedInterfacesSayWhy) {
  auto d = parse_domain(R"(<domain><name>x</name><devices>
    <interface type='direct'><mac address='52:54:00:zz:00:01'/><source dev='p0'/></interface>
    <interface type='user'><mac address='52:54:00:00:00:09'/></interface>
    <interface type='direct'><mac address='52:54:00:00:00:02'/><source mode='bridge'/></interface>
    <interface type='direct'><mac address='52:54:00:00:00:03'/></interface>
    <interface type='direct'><mac address='52:54:00:00:00:04'/><source dev='p1'/></interface>
  </devices></domain>)");
  ASSERT_TRUE(d) << d.error().message;
  ASSERT_EQ(d->interfaces.size(), 1u);
  EXPECT_EQ(d->interfaces[0].source_dev, "p1");
  EXPECT_EQ(d->skipped, (std::vector<std::string>{
                            "interface 1: no valid <mac address> ('52:54:00:zz:00:01')",
                            "interface 3: no <source dev> (mac 52:54:00:00:00:02)",
                            "interface 4: no <source dev> (mac 52:54:00:00:00:03)",
                        }));
}

TEST(ParseDomain, ElementsOfOtherNamespacesAreNotLibvirts) {
  auto d = parse_domain(R"(<domain xmlns:x='urn:x'><x:name>no</x:name><name>yes</name><devices>
    <x:interface type='direct'><mac address='52:54:00:00:00:01'/><source dev='p0'/></x:interface>
    <interface type='direct'><x:mac address='52:54:00:00:00:02'/><mac address='52:54:00:00:00:03'/>
      <source dev='p1'/><x:target dev='t'/></interface>
  </devices></domain>)");
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->name, "yes");
  ASSERT_EQ(d->interfaces.size(), 1u);
  EXPECT_EQ(d->interfaces[0].mac, mac("52:54:00:00:00:03"));
  EXPECT_EQ(d->interfaces[0].target_dev, "");
  // The element alone declares the namespace it borrowed from <domain>.
  EXPECT_TRUE(contains(d->interfaces[0].xml, "xmlns:x=\"urn:x\"")) << d->interfaces[0].xml;
  EXPECT_EQ(reparse(d->interfaces[0].xml), d->interfaces[0]);
}

TEST(ParseDomain, Errors) {
  struct Case {
    std::string xml;
    std::string message_part;
  };
  const std::vector<Case> cases = {
      {"", "is empty"},
      {"<domain><name>x</name>", "not well-formed"},
      {"<domain><name>x</nam></domain>", "not well-formed at line 1"},
      {"<domain><name>x</name></domain><domain/>", "not well-formed"},
      {"not xml at all", "not well-formed"},
      {"<domain><name>&undeclared;</name></domain>", "not well-formed"},
      {"<network><name>default</name></network>", "the root element is <network>"},
      {"<x:domain xmlns:x='urn:x'><name>a</name></x:domain>", "the root element is <domain>"},
      {"<domain type='kvm'><uuid>5c1e3f7a-2b8d-4e69-9f0a-7d2c6b41e8a3</uuid></domain>", "no <name>"},
      {"<domain><name></name></domain>", "no <name>"},
  };
  EXPECT_FALSE(parse_domain(std::string_view{}));
  for (const Case& c : cases) {
    auto d = parse_domain(c.xml);
    ASSERT_FALSE(d) << c.xml;
    EXPECT_EQ(d.error().code, EINVAL) << c.xml;
    EXPECT_TRUE(contains(d.error().message, c.message_part)) << c.xml << ": " << d.error().message;
  }
}

TEST(ParseDomain, ErrorMessagesAreSafeText) {
  auto d = parse_domain("<domain><name>x</name><\x01\xff/></domain>");
  ASSERT_FALSE(d);
  for (char ch : d.error().message) {
    EXPECT_TRUE(ch >= 0x20 && ch < 0x7f) << d.error().message;
  }
}

TEST(ParseDomain, SizeIsBounded) {
  const std::string head = "<domain><name>big</name><!--";
  const std::string tail = "--></domain>";
  std::string at_limit = head + std::string(kMaxDomainXmlBytes - head.size() - tail.size(), 'x') + tail;
  ASSERT_EQ(at_limit.size(), kMaxDomainXmlBytes);
  auto fits = parse_domain(at_limit);
  ASSERT_TRUE(fits) << fits.error().message;
  EXPECT_EQ(fits->name, "big");

  auto over = parse_domain(head + std::string(5 << 20, 'x') + tail);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, EFBIG);
  EXPECT_TRUE(contains(over.error().message, "over the limit")) << over.error().message;
}

TEST(ParseDomain, DtdsAreRefusedUnexpanded) {
  std::string laughs = "<?xml version='1.0'?>\n<!DOCTYPE domain [\n<!ENTITY l0 'ha'>\n";
  for (int i = 1; i < 10; ++i) {
    laughs += "<!ENTITY l" + std::to_string(i) + " '";
    for (int j = 0; j < 10; ++j) laughs += "&l" + std::to_string(i - 1) + ";";
    laughs += "'>\n";
  }
  laughs += "]>\n<domain><name>&l9;</name></domain>";
  const std::vector<std::string> cases = {
      laughs,
      "<!DOCTYPE domain [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><domain><name>&x;</name></domain>",
      "<!DOCTYPE domain SYSTEM 'http://127.0.0.1:9/domain.dtd'><domain><name>a</name></domain>",
      "<!DOCTYPE domain [<!ENTITY % p SYSTEM 'file:///etc/passwd'> %p;]><domain><name>a</name></domain>",
      "<!DOCTYPE domain><domain><name>a</name></domain>",
  };
  for (const std::string& xml : cases) {
    auto d = parse_domain(xml);
    ASSERT_FALSE(d) << xml;
    EXPECT_EQ(d.error().code, EINVAL);
    EXPECT_TRUE(contains(d.error().message, "DTD")) << d.error().message;
  }
}

TEST(ParseDomain, DeepNestingIsAnErrorNotACrash) {
  std::string deep = "<domain><name>x</name>";
  for (int i = 0; i < 100000; ++i) deep += "<a>";
  for (int i = 0; i < 100000; ++i) deep += "</a>";
  deep += "</domain>";
  EXPECT_FALSE(parse_domain(deep));
}

TEST(ParseDomain, ParsesFromSeveralThreads) {
  const std::string xml = fixture("domain_live_q35.xml");
  std::vector<std::thread> threads;
  std::vector<int> good(4, 0);
  for (size_t t = 0; t < good.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        auto d = parse_domain(xml);
        if (d && d->interfaces.size() == 2) ++good[t];
        (void)parse_domain("<domain><name>x</nam></domain>");
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(good, (std::vector<int>(4, 50)));
}

TEST(AttachXml, DropsTargetAndLibvirtAliasKeepsTheRest) {
  const DirectInterface live = live_domain().interfaces.at(0);
  auto xml = attach_xml(live, true);
  ASSERT_TRUE(xml) << xml.error().message;
  EXPECT_EQ(*xml,
            "<interface type=\"direct\">\n"
            "      <mac address=\"52:54:00:6b:3c:01\"/>\n"
            "      <source dev=\"enp1s0f0\" mode=\"bridge\"/>\n"
            "      <model type=\"virtio\"/>\n"
            "      <driver name=\"vhost\" queues=\"4\"/>\n"
            "      <link state=\"up\"/>\n"
            "      <address type=\"pci\" domain=\"0x0000\" bus=\"0x01\" slot=\"0x00\" function=\"0x0\"/>\n"
            "    </interface>");
  DirectInterface back = reparse(*xml);
  EXPECT_EQ(back.mac, live.mac);
  EXPECT_EQ(back.source_dev, "enp1s0f0");
  EXPECT_EQ(back.mode, "bridge");
  EXPECT_EQ(back.model, "virtio");
  EXPECT_EQ(back.queues, 4u);
  EXPECT_EQ(back.pci_address, "0000:01:00.0");
  EXPECT_EQ(back.target_dev, "");
  EXPECT_EQ(back.alias, "");
  EXPECT_TRUE(back.link_up);

  auto down = attach_xml(live, false);
  ASSERT_TRUE(down) << down.error().message;
  EXPECT_FALSE(reparse(*down).link_up);
}

TEST(AttachXml, KeepsUserAliasAndSetsExistingLink) {
  const DirectInterface live = live_domain().interfaces.at(1);
  for (bool up : {true, false}) {
    auto xml = attach_xml(live, up);
    ASSERT_TRUE(xml) << xml.error().message;
    DirectInterface back = reparse(*xml);
    EXPECT_EQ(back.mac, live.mac);
    EXPECT_EQ(back.source_dev, "enp1s0f1");
    EXPECT_EQ(back.mode, "private");
    EXPECT_EQ(back.model, "e1000e");
    EXPECT_EQ(back.alias, "ua-backup");
    EXPECT_EQ(back.pci_address, "0000:07:00.0");
    EXPECT_EQ(back.target_dev, "");
    EXPECT_EQ(back.link_up, up);
    EXPECT_FALSE(contains(*xml, "<target")) << *xml;
    // The one <link> is changed, not a second one added.
    EXPECT_EQ(xml->find("<link"), xml->rfind("<link")) << *xml;
  }
}

TEST(AttachXml, CompactElementGetsLinkBeforeAddress) {
  DirectInterface iface;
  iface.xml =
      "<interface type='direct'><mac address='52:54:00:00:00:01'/><source dev='p0' mode='vepa'/>"
      "<target dev='macvtap9'/><alias name='net2'/><address type='pci' domain='0x0000' bus='0x01' "
      "slot='0x00' function='0x0'/></interface>";
  auto xml = attach_xml(iface, false);
  ASSERT_TRUE(xml) << xml.error().message;
  EXPECT_EQ(*xml,
            "<interface type=\"direct\"><mac address=\"52:54:00:00:00:01\"/><source dev=\"p0\" mode=\"vepa\"/>"
            "<link state=\"down\"/><address type=\"pci\" domain=\"0x0000\" bus=\"0x01\" slot=\"0x00\" "
            "function=\"0x0\"/></interface>");
}

TEST(AttachXml, WithoutLiveXmlBuildsFromTheFields) {
  DirectInterface iface;
  iface.mac = mac("52:54:00:aa:bb:cc");
  iface.source_dev = "p0";
  iface.mode = "bridge";
  iface.model = "virtio";
  iface.alias = "ua-x";
  iface.target_dev = "macvtap3";
  iface.queues = 2;
  iface.link_up = false;
  iface.pci_address = "0000:0a:1f.7";
  auto xml = attach_xml(iface, true);
  ASSERT_TRUE(xml) << xml.error().message;
  DirectInterface back = reparse(*xml);
  back.xml.clear();
  DirectInterface expected = iface;
  expected.target_dev = "";
  expected.link_up = true;
  EXPECT_EQ(back, expected);

  auto update = link_update_xml(iface, false);
  ASSERT_TRUE(update) << update.error().message;
  back = reparse(*update);
  back.xml.clear();
  EXPECT_EQ(back, iface);

  iface.pci_address = "0000:01:00";
  EXPECT_FALSE(attach_xml(iface, true));
  iface.pci_address = "";
  iface.source_dev = "";
  EXPECT_FALSE(attach_xml(iface, true));
}

TEST(AttachXml, BadElementXmlIsAnError) {
  DirectInterface iface;
  for (const char* xml : {"<interface", "<disk type='file'/>", "<!DOCTYPE interface><interface/>"}) {
    iface.xml = xml;
    EXPECT_FALSE(attach_xml(iface, true)) << xml;
    EXPECT_FALSE(link_update_xml(iface, true)) << xml;
  }
}

TEST(LinkUpdateXml, KeepsTargetAndAliasSetsLink) {
  const Domain d = live_domain();
  ASSERT_EQ(d.interfaces.size(), 2u);
  for (const DirectInterface& live : d.interfaces) {
    for (bool up : {true, false}) {
      auto xml = link_update_xml(live, up);
      ASSERT_TRUE(xml) << xml.error().message;
      DirectInterface back = reparse(*xml);
      back.xml = live.xml;
      DirectInterface expected = live;
      expected.link_up = up;
      EXPECT_EQ(back, expected) << *xml;
      EXPECT_EQ(xml->find("<link"), xml->rfind("<link")) << *xml;
    }
  }
  // Added where libvirt writes it, indented like the rest.
  auto xml = link_update_xml(d.interfaces[0], false);
  ASSERT_TRUE(xml);
  EXPECT_TRUE(contains(*xml, "queues=\"4\"/>\n      <link state=\"down\"/>\n      <alias name=\"net0\"/>")) << *xml;
}

TEST(LinkUpdateXml, AppendsLinkAtTheEndWhenNothingFollowsIt) {
  DirectInterface iface;
  iface.xml = "<interface type='direct'>\n  <mac address='52:54:00:00:00:01'/>\n  <source dev='p0'/>\n</interface>";
  auto xml = link_update_xml(iface, true);
  ASSERT_TRUE(xml) << xml.error().message;
  EXPECT_EQ(*xml,
            "<interface type=\"direct\">\n  <mac address=\"52:54:00:00:00:01\"/>\n  <source dev=\"p0\"/>\n"
            "  <link state=\"up\"/>\n</interface>");
}

}  // namespace
}  // namespace relink::libvirt

namespace relink::libvirt {
namespace {

TEST(LocalSockets, FromTheUri) {
  const std::vector<std::string> system = {"/run/libvirt/virtqemud-sock", "/run/libvirt/libvirt-sock"};
  EXPECT_EQ(local_sockets("qemu:///system"), system);
  EXPECT_EQ(local_sockets("qemu+unix:///system"), system);
  EXPECT_EQ(local_sockets("qemu:///system?socket=/tmp/x/libvirt-sock"), std::vector<std::string>{"/tmp/x/libvirt-sock"});
  EXPECT_EQ(local_sockets("qemu+unix:///system?mode=legacy&socket=/a%20b/sock"), std::vector<std::string>{"/a b/sock"});
  EXPECT_TRUE(local_sockets("qemu+ssh://host/system").empty());
  EXPECT_TRUE(local_sockets("qemu://host/system").empty());
  EXPECT_TRUE(local_sockets("qemu:///session").empty());
  EXPECT_TRUE(local_sockets("test:///default").empty());
  EXPECT_TRUE(local_sockets("qemu:///system?socket=relative").empty());
  EXPECT_TRUE(local_sockets("garbage").empty());
}

}  // namespace
}  // namespace relink::libvirt
