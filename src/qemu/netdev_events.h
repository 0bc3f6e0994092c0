// SPDX-License-Identifier: GPL-2.0-or-later
// The QMP events QEMU sends when a netdev's backend connects or goes away,
// and the QEMU version from which vhost-user netdevs send them.
#pragma once

namespace relink::qemu {

// A stream netdev's peer connected / went away (the event's "netdev-id" names
// the netdev): passt's end of the socket.
inline constexpr const char* kStreamConnected = "NETDEV_STREAM_CONNECTED";
inline constexpr const char* kStreamDisconnected = "NETDEV_STREAM_DISCONNECTED";
// QEMU >= 10.0: a vhost-user netdev's backend connected / went away.
inline constexpr const char* kVhostUserConnected = "NETDEV_VHOST_USER_CONNECTED";
inline constexpr const char* kVhostUserDisconnected = "NETDEV_VHOST_USER_DISCONNECTED";
inline constexpr unsigned kQemuVhostUserEvents = 1000;  // QEMU 10.0, as QmpClient::qemu_version()

}  // namespace relink::qemu
