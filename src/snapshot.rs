//! Taking a snapshot: discovery → consistent paginated lists → canonical tree → mirror commit.
