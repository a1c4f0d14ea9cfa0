//! Accept loops, listener filters, filter-chain selection, the TCP proxy, and draining.
