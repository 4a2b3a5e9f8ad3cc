"""Duplicates: pHash near duplicates across a data set, SemDeDup, decontamination against protected sets."""
