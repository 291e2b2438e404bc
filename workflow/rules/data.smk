# rules of this family: written by its owner
