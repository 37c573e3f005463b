//! Ordo's participant SDK. The client (submit, status, subscribe) and the exactly-once applier
//! arrive with the coordinator node; see the project's open issues.
