// SPDX-License-Identifier: GPL-2.0-or-later
// Parses libvirt's live domain XML with libxml2 (bounded, no network, no DTD) and writes device XML.
#include "libvirt/domain_xml.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#include <charconv>
#include <cstdio>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <utility>

#include "util/untrusted.h"

namespace relink::libvirt {
namespace {

struct DocFree {
  void operator()(xmlDoc* doc) const { xmlFreeDoc(doc); }
};
struct CtxtFree {
  void operator()(xmlParserCtxt* ctxt) const { xmlFreeParserCtxt(ctxt); }
};
struct BufferFree {
  void operator()(xmlBuffer* buf) const { xmlBufferFree(buf); }
};
struct CharFree {
  void operator()(xmlChar* s) const { xmlFree(s); }
};
using DocPtr = std::unique_ptr<xmlDoc, DocFree>;
using CtxtPtr = std::unique_ptr<xmlParserCtxt, CtxtFree>;
using BufferPtr = std::unique_ptr<xmlBuffer, BufferFree>;
using CharPtr = std::unique_ptr<xmlChar, CharFree>;

// No XML_PARSE_NOENT, DTDLOAD, DTDVALID or HUGE: entities stay unexpanded,
// nothing external is read, and libxml2 keeps its limits on depth, name and
// text length. Blanks are kept so an element serializes as libvirt wrote it.
constexpr int kParseOptions = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING;

const char* chars(const xmlChar* s) { return reinterpret_cast<const char*>(s); }
const xmlChar* xml_chars(const char* s) { return reinterpret_cast<const xmlChar*>(s); }

// libxml2's own initialisation is not safe to race; later calls are no-ops.
void init_libxml() {
  static std::once_flag once;
  std::call_once(once, [] { xmlInitParser(); });
}

// Called by the parser at <!DOCTYPE, before any declaration in it is read.
// libvirt never writes a DTD, and a DTD is where entity tricks (billion
// laughs, external entities) live: stop right there.
void refuse_dtd(void* ctx, const xmlChar*, const xmlChar*, const xmlChar*) {
  xmlStopParser(static_cast<xmlParserCtxt*>(ctx));
}

Result<DocPtr> read_xml(std::string_view xml, const char* what) {
  init_libxml();
  if (xml.size() > kMaxDomainXmlBytes) {
    return Error{EFBIG, std::string(what) + " of " + std::to_string(xml.size()) + " bytes is over the limit of " +
                            std::to_string(kMaxDomainXmlBytes) + " bytes"};
  }
  if (xml.empty()) return Error{EINVAL, std::string(what) + " is empty"};
  CtxtPtr ctxt(xmlNewParserCtxt());
  if (!ctxt || !ctxt->sax) return Error{ENOMEM, std::string("out of memory parsing ") + what};
  // The context has its own copy of the SAX handler: this changes no global.
  ctxt->sax->internalSubset = refuse_dtd;
  DocPtr doc(xmlCtxtReadMemory(ctxt.get(), xml.data(), static_cast<int>(xml.size()), nullptr, nullptr,
                               kParseOptions));
  if (ctxt->errNo == XML_ERR_USER_STOP || (doc && (doc->intSubset || doc->extSubset))) {
    return Error{EINVAL, std::string(what) + " has a DTD (<!DOCTYPE>); libvirt never writes one"};
  }
  if (!doc || !ctxt->wellFormed) {
    const xmlError* err = xmlCtxtGetLastError(ctxt.get());
    std::string detail = err && err->message ? err->message : "";
    while (!detail.empty() && (detail.back() == '\n' || detail.back() == ' ')) detail.pop_back();
    std::string where = err && err->line > 0 ? " at line " + std::to_string(err->line) : "";
    return Error{EINVAL, std::string(what) + " is not well-formed" + where +
                             (detail.empty() ? "" : ": " + untrusted::safe_text(detail, 160))};
  }
  return doc;
}

// libvirt's elements have no namespace; a same-named element in some other
// namespace (metadata, qemu:commandline) is not one of them.
bool is_element(const xmlNode* node, const char* name) {
  return node->type == XML_ELEMENT_NODE && node->ns == nullptr && xmlStrEqual(node->name, xml_chars(name));
}

bool is_blank_text(const xmlNode* node) { return node->type == XML_TEXT_NODE && xmlIsBlankNode(node); }

// The first child element of that name, as libvirt's XPath lookups take it.
xmlNode* child(const xmlNode* parent, const char* name) {
  for (xmlNode* node = parent->children; node; node = node->next) {
    if (is_element(node, name)) return node;
  }
  return nullptr;
}

std::optional<std::string> attr(const xmlNode* node, const char* name) {
  if (!node) return std::nullopt;
  CharPtr value(xmlGetNoNsProp(node, xml_chars(name)));
  if (!value) return std::nullopt;
  return std::string(chars(value.get()));
}

std::string child_attr(const xmlNode* parent, const char* element, const char* name) {
  return attr(child(parent, element), name).value_or("");
}

std::string text(const xmlNode* node) {
  CharPtr content(xmlNodeGetContent(node));
  return content ? chars(content.get()) : "";
}

template <typename T>
std::optional<T> parse_number(std::string_view s, int base) {
  T value{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value, base);
  if (s.empty() || ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return value;
}

// As libvirt reads PCI address parts (strtoul base 0): "0x" hex, a leading
// 0 octal, else decimal. Live XML always has "0x".
std::optional<unsigned> parse_pci_part(std::string_view s) {
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) return parse_number<unsigned>(s.substr(2), 16);
  if (s.size() > 1 && s[0] == '0') return parse_number<unsigned>(s.substr(1), 8);
  return parse_number<unsigned>(s, 10);
}

struct PciAddress {
  unsigned domain = 0, bus = 0, slot = 0, function = 0;
  bool valid() const { return domain <= 0xffff && bus <= 0xff && slot <= 0x1f && function <= 7; }
};

std::string format_pci(const PciAddress& a) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04x:%02x:%02x.%x", a.domain, a.bus, a.slot, a.function);
  return buf;
}

// "" unless <address type='pci'> with parts in range. Missing parts are 0,
// as libvirt takes them.
std::string pci_address_of(const xmlNode* address) {
  if (!address || attr(address, "type") != "pci") return "";
  PciAddress a;
  for (auto [name, part] : {std::pair{"domain", &a.domain}, std::pair{"bus", &a.bus}, std::pair{"slot", &a.slot},
                            std::pair{"function", &a.function}}) {
    auto value = attr(address, name);
    if (!value) continue;
    auto n = parse_pci_part(*value);
    if (!n) return "";
    *part = *n;
  }
  return a.valid() ? format_pci(a) : "";
}

// "0000:01:00.0" back to its parts.
std::optional<PciAddress> parse_pci_text(std::string_view s) {
  if (s.size() != 12 || s[4] != ':' || s[7] != ':' || s[10] != '.') return std::nullopt;
  auto domain = parse_number<unsigned>(s.substr(0, 4), 16);
  auto bus = parse_number<unsigned>(s.substr(5, 2), 16);
  auto slot = parse_number<unsigned>(s.substr(8, 2), 16);
  auto function = parse_number<unsigned>(s.substr(11, 1), 16);
  if (!domain || !bus || !slot || !function) return std::nullopt;
  PciAddress a{*domain, *bus, *slot, *function};
  if (!a.valid()) return std::nullopt;
  return a;
}

std::string hex_part(unsigned v, int width) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%0*x", width, v);
  return buf;
}

Result<std::string> dump(xmlDoc* doc, xmlNode* node) {
  BufferPtr buf(xmlBufferCreate());
  if (!buf || xmlNodeDump(buf.get(), doc, node, 0, 0) < 0) return Error{ENOMEM, "cannot serialize an element"};
  return std::string(chars(xmlBufferContent(buf.get())), static_cast<size_t>(xmlBufferLength(buf.get())));
}

// The element on its own: copied into a document of its own first, which
// declares the namespaces it uses from its ancestors on it.
Result<std::string> dump_standalone(const xmlNode* node) {
  DocPtr doc(xmlNewDoc(xml_chars("1.0")));
  if (!doc) return Error{ENOMEM, "out of memory copying an element"};
  xmlNode* copy = xmlDocCopyNode(const_cast<xmlNode*>(node), doc.get(), 1);
  if (!copy) return Error{ENOMEM, "out of memory copying an element"};
  xmlDocSetRootElement(doc.get(), copy);
  return dump(doc.get(), copy);
}

// An interface's <mac address>, which every kind followed must have.
Result<MacAddress> interface_mac(const xmlNode* node) {
  auto mac_text = attr(child(node, "mac"), "address");
  auto mac = mac_text ? parse_mac(*mac_text) : std::nullopt;
  if (mac) return *mac;
  return Error{EINVAL, mac_text ? "no valid <mac address> ('" + untrusted::safe_text(*mac_text, 40) + "')"
                                : std::string("no valid <mac address>")};
}

// Why it is skipped, when it is.
Result<DirectInterface> parse_direct(const xmlNode* node) {
  DirectInterface iface;
  auto mac = interface_mac(node);
  if (!mac) return mac.error();
  iface.mac = *mac;
  const xmlNode* source = child(node, "source");
  iface.source_dev = attr(source, "dev").value_or("");
  if (iface.source_dev.empty()) return Error{EINVAL, "no <source dev> (mac " + format_mac(iface.mac) + ")"};
  if (auto mode = attr(source, "mode"); mode && !mode->empty()) iface.mode = *mode;
  iface.model = child_attr(node, "model", "type");
  iface.alias = child_attr(node, "alias", "name");
  iface.target_dev = child_attr(node, "target", "dev");
  // libvirt refuses a bad queues value; should one get here, 1 is what QEMU
  // would use without it.
  auto queues = parse_number<unsigned>(child_attr(node, "driver", "queues"), 10);
  iface.queues = queues && *queues > 0 ? *queues : 1;
  iface.link_up = child_attr(node, "link", "state") != "down";
  iface.pci_address = pci_address_of(child(node, "address"));
  auto xml = dump_standalone(node);
  if (!xml) return xml.error();
  iface.xml = std::move(*xml);
  return iface;
}

// Why it is skipped, when it is.
Result<BridgeInterface> parse_bridge(const xmlNode* node) {
  BridgeInterface iface;
  auto mac = interface_mac(node);
  if (!mac) return mac.error();
  iface.mac = *mac;
  const std::string tag = " (mac " + format_mac(iface.mac) + ")";
  const xmlNode* source = child(node, "source");
  iface.bridge = attr(source, "bridge").value_or("");
  iface.network = attr(source, "network").value_or("");
  iface.tap = child_attr(node, "target", "dev");
  iface.alias = child_attr(node, "alias", "name");
  if (iface.bridge.empty()) return Error{EINVAL, "no <source bridge>" + tag};
  if (iface.tap.empty()) return Error{EINVAL, "no <target dev>: no tap yet" + tag};
  // Open vSwitch (and MidoNet) keep their ports in their own database and
  // put them back themselves; the bridge is not a Linux bridge either.
  if (const std::string vport = child_attr(node, "virtualport", "type"); !vport.empty()) {
    return Error{EINVAL, "a port of " + untrusted::safe_text(vport, 40) + " bridge " +
                             untrusted::safe_text(iface.bridge, 40) + ", which keeps its ports itself" + tag};
  }
  return iface;
}

std::string libvirt_network_line(const xmlNode* node) {
  const xmlNode* source = child(node, "source");
  return untrusted::safe_text(child_attr(node, "target", "dev"), 40) + " on libvirt's network '" +
         untrusted::safe_text(attr(source, "network").value_or(""), 60) + "' (" +
         untrusted::safe_text(attr(source, "bridge").value_or(""), 40) + ")";
}

// Removes an element with the indentation in front of it, so the rest keeps
// libvirt's layout.
void remove_element(xmlNode* node) {
  if (node->prev && is_blank_text(node->prev)) {
    xmlNode* blank = node->prev;
    xmlUnlinkNode(blank);
    xmlFreeNode(blank);
  }
  xmlUnlinkNode(node);
  xmlFreeNode(node);
}

// Adds a child element before `anchor` (at the end when null), indented like
// its neighbours.
void insert_element(xmlNode* parent, xmlNode* node, xmlNode* anchor) {
  if (anchor) {
    xmlNode* indent = anchor->prev && is_blank_text(anchor->prev) ? xmlCopyNode(anchor->prev, 1) : nullptr;
    xmlAddPrevSibling(anchor, node);
    if (indent) xmlAddPrevSibling(anchor, indent);  // indent node indent' anchor
    return;
  }
  xmlNode* last = parent->last;
  xmlNode* last_element = last;
  while (last_element && last_element->type != XML_ELEMENT_NODE) last_element = last_element->prev;
  if (last && is_blank_text(last) && last_element && last_element->prev && is_blank_text(last_element->prev)) {
    xmlNode* indent = xmlCopyNode(last_element->prev, 1);
    xmlAddPrevSibling(last, node);
    if (indent) xmlAddPrevSibling(node, indent);  // last_element indent' node closing-indent
    return;
  }
  xmlAddChild(parent, node);
}

// Where libvirt writes <link>: before the first of these, else at the end.
// Order does not matter to libvirt; this keeps the element as it would
// write it.
constexpr const char* kAfterLink[] = {"mtu", "coalesce", "rom", "boot", "alias", "address", "acpi"};

Result<void> set_link(xmlDoc* doc, xmlNode* iface, bool up) {
  const char* state = up ? "up" : "down";
  if (xmlNode* link = child(iface, "link")) {
    if (!xmlSetProp(link, xml_chars("state"), xml_chars(state))) return Error{ENOMEM, "cannot set <link state>"};
    return ok();
  }
  xmlNode* link = xmlNewDocNode(doc, nullptr, xml_chars("link"), nullptr);
  if (!link) return Error{ENOMEM, "cannot add <link>"};
  if (!xmlNewProp(link, xml_chars("state"), xml_chars(state))) {
    xmlFreeNode(link);
    return Error{ENOMEM, "cannot add <link>"};
  }
  xmlNode* anchor = nullptr;
  for (xmlNode* node = iface->children; node && !anchor; node = node->next) {
    for (const char* name : kAfterLink) {
      if (is_element(node, name)) {
        anchor = node;
        break;
      }
    }
  }
  insert_element(iface, link, anchor);
  return ok();
}

// An element for an interface known only by its fields (no live XML).
Result<DocPtr> build_element(const DirectInterface& iface) {
  if (iface.source_dev.empty()) return Error{EINVAL, "interface has no source dev"};
  std::optional<PciAddress> pci;
  if (!iface.pci_address.empty()) {
    pci = parse_pci_text(iface.pci_address);
    if (!pci) return Error{EINVAL, "invalid PCI address '" + untrusted::safe_text(iface.pci_address, 40) + "'"};
  }
  DocPtr doc(xmlNewDoc(xml_chars("1.0")));
  xmlNode* root = doc ? xmlNewDocNode(doc.get(), nullptr, xml_chars("interface"), nullptr) : nullptr;
  if (!root) return Error{ENOMEM, "out of memory building an interface"};
  xmlDocSetRootElement(doc.get(), root);
  bool built = true;
  auto add = [&](const char* name, std::initializer_list<std::pair<const char*, std::string>> attrs) {
    xmlNode* node = xmlNewChild(root, nullptr, xml_chars(name), nullptr);
    built = built && node;
    for (const auto& [key, value] : attrs) {
      built = built && node && xmlNewProp(node, xml_chars(key), xml_chars(value.c_str()));
    }
  };
  built = xmlNewProp(root, xml_chars("type"), xml_chars("direct")) != nullptr;
  add("mac", {{"address", format_mac(iface.mac)}});
  add("source", {{"dev", iface.source_dev}, {"mode", iface.mode.empty() ? "vepa" : iface.mode}});
  if (!iface.target_dev.empty()) add("target", {{"dev", iface.target_dev}});
  if (!iface.model.empty()) add("model", {{"type", iface.model}});
  if (iface.queues > 1) add("driver", {{"queues", std::to_string(iface.queues)}});
  if (!iface.link_up) add("link", {{"state", "down"}});
  if (!iface.alias.empty()) add("alias", {{"name", iface.alias}});
  if (pci) {
    add("address", {{"type", "pci"},
                    {"domain", hex_part(pci->domain, 4)},
                    {"bus", hex_part(pci->bus, 2)},
                    {"slot", hex_part(pci->slot, 2)},
                    {"function", hex_part(pci->function, 1)}});
  }
  if (!built) return Error{ENOMEM, "out of memory building an interface"};
  return doc;
}

Result<DocPtr> element_doc(const DirectInterface& iface) {
  if (iface.xml.empty()) return build_element(iface);
  auto doc = read_xml(iface.xml, "interface XML");
  if (!doc) return doc.error();
  xmlNode* root = xmlDocGetRootElement(doc->get());
  if (!root || !is_element(root, "interface")) return Error{EINVAL, "interface XML is not an <interface>"};
  return doc;
}

// libvirt names the aliases it assigns itself (net0, ...); a user alias
// carries the "ua-" prefix and survives a re-attach.
bool user_alias(const xmlNode* alias) { return attr(alias, "name").value_or("").starts_with("ua-"); }

Result<Domain> read_domain(std::string_view xml) {
  auto doc = read_xml(xml, "domain XML");
  if (!doc) return doc.error();
  const xmlNode* root = xmlDocGetRootElement(doc->get());
  if (!root) return Error{EINVAL, "domain XML has no root element"};
  if (!is_element(root, "domain")) {
    return Error{EINVAL, "not a domain XML: the root element is <" + untrusted::safe_text(chars(root->name), 40) + ">"};
  }
  Domain domain;
  if (const xmlNode* name = child(root, "name")) domain.name = text(name);
  if (domain.name.empty()) return Error{EINVAL, "domain XML has no <name>"};
  if (const xmlNode* uuid = child(root, "uuid")) domain.uuid = text(uuid);
  if (auto id = parse_number<int>(attr(root, "id").value_or(""), 10); id && *id >= 0) domain.id = *id;
  unsigned index = 0;
  for (const xmlNode* devices = root->children; devices; devices = devices->next) {
    if (!is_element(devices, "devices")) continue;
    for (const xmlNode* node = devices->children; node; node = node->next) {
      if (!is_element(node, "interface")) continue;
      ++index;
      const std::string where = "interface " + std::to_string(index) + ": ";
      const std::string type = attr(node, "type").value_or("");
      if (type == "direct") {
        auto iface = parse_direct(node);
        if (iface) domain.interfaces.push_back(std::move(*iface));
        else domain.skipped.push_back(where + iface.error().message);
      } else if (type == "bridge") {
        auto iface = parse_bridge(node);
        if (iface) domain.bridge_ports.push_back(std::move(*iface));
        else domain.skipped.push_back(where + iface.error().message);
      } else if (type == "network") {
        domain.left_to_libvirt.push_back(where + libvirt_network_line(node));
      }
    }
  }
  return domain;
}

Result<std::string> edit_element(const DirectInterface& iface, bool for_attach, bool link_up) {
  auto doc = element_doc(iface);
  if (!doc) return doc.error();
  xmlNode* root = xmlDocGetRootElement(doc->get());
  for (xmlNode* node = root->children; node && for_attach;) {
    xmlNode* next = node->next;
    if (is_element(node, "target") || (is_element(node, "alias") && !user_alias(node))) remove_element(node);
    node = next;
  }
  if (auto set = set_link(doc->get(), root, link_up); !set) return set.error();
  return dump(doc->get(), root);
}

}  // namespace

Result<Domain> parse_domain(std::string_view xml) {
  try {
    return read_domain(xml);
  } catch (const std::bad_alloc&) {
    return Error{ENOMEM, "out of memory parsing domain XML"};
  }
}

Result<std::string> attach_xml(const DirectInterface& iface, bool link_up) {
  try {
    return edit_element(iface, /*for_attach=*/true, link_up);
  } catch (const std::bad_alloc&) {
    return Error{ENOMEM, "out of memory building interface XML"};
  }
}

Result<std::string> link_update_xml(const DirectInterface& iface, bool up) {
  try {
    return edit_element(iface, /*for_attach=*/false, up);
  } catch (const std::bad_alloc&) {
    return Error{ENOMEM, "out of memory building interface XML"};
  }
}

}  // namespace relink::libvirt
