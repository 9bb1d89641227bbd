"""zjulab.crs: user-needs-centric conversational recommendation (U-NEED)."""
