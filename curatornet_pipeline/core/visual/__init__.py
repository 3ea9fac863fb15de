"""Visual features (sections 3.1, 4.2): ResNet embeddings of the artwork images, PCA and the k-means visual clusters."""
