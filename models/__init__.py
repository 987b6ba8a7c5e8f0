"""What a lead IS: pydantic schemas shared by every stage, plus the scoring model code."""
