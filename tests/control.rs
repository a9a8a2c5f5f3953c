//! Placeholder; filled by the issue-5 test work.
