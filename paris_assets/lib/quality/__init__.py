"""Quality signals per image, caption filters, and what cluster_labels prunes before clustering."""
