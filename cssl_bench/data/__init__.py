"""Data: image sources (embedded, folders, named data sets), view recipes, augmentations and loaders."""
