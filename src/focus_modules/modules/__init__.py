"""``nn.Module`` wrappers that hold hyper-parameters and delegate to the functional ops."""
