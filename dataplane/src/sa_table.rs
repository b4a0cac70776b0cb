//! Per-worker SA tables, keyed by inbound SPI slot.
