//! feral-transport: QUIC mutual-TLS sync transport and discovery (lands with the [sync] issue).
