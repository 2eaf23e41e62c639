"""Image segmentation models behind one interface, with the DiTTA head add-on."""
