//! NAR (owned by the nar helper)
