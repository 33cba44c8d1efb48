"""Knowledge distillation: the teacher, its soft labels, and the KD loss."""
