/* forward-private.h: ports added to a running VM (`hutch forward`), relayed over SSH
 * direct-tcpip.
 *
 * passt's forwards are fixed when it starts; a port added later goes through the VM's SSH
 * server instead. The VM's supervisor serves it when one answers (supervisor.c: the port is a
 * listener in its loop, each connection a channel on its session). Otherwise the forward gets
 * one detached process (named "hutch-forward") that listens on the host address and port,
 * opens a direct-tcpip channel to 127.0.0.1:GUEST in the guest for each connection, and exits
 * on SIGTERM or when the SSH session dies (the VM stopped: passt then closes the connection).
 * The files are in the instance's runtime directory, 0600 (forward-files-private.h). */
#pragma once

#include "forward-files-private.h"
#include "profile-private.h"
#include "ssh-private.h"

/* Parses "[HOST_IP:]HOST:GUEST" (as --port, an IPv6 HOST_IP in brackets) into a port that is
 * one TCP port on each side; "/tcp" is accepted, ranges and "/udp" are HUTCH_ERROR_USAGE. */
HutchPort *hutch_forward_parse(const char *spec, GError **error);

/* A listening socket (non-blocking, close-on-exec) on ip:port, or -1 with
 * HUTCH_ERROR_PORT_IN_USE naming the port (HUTCH_ERROR_USAGE: ip is no numeric address). */
int hutch_forward_listen(const char *ip, guint port, GError **error);

/* Relays connections accepted on listen_fd (a listening socket; made non-blocking) to
 * 127.0.0.1:guest_port on the SSH server, over direct-tcpip channels of ssh, concurrently,
 * until stop_fd (if >= 0) becomes readable: then returns TRUE. Returns FALSE with
 * HUTCH_ERROR_SSH when the SSH session fails or its peer closes the connection. A channel the
 * server refuses (nothing listens on the guest port) closes that one client connection.
 * Events go to log_fd as lines (-1: none). ssh is left non-blocking; closing it is the
 * caller's. */
gboolean hutch_forward_relay(HutchSsh *ssh, int listen_fd, guint guest_port, int stop_fd,
                             int log_fd, GError **error);
