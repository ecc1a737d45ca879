"""One module per spec form. Each reads files through a `TreeView` and returns an `Environment`."""
