//! API discovery: which resources a cluster serves and which of them a snapshot reads.
