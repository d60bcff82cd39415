//! Connecting to a cluster: kubeconfig loading (`--kubeconfig`, `--context`, inline kubeconfig
//! text), client construction, and the default cluster name. Never logs credentials.
