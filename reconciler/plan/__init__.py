"""Plans: desired specs against observed live state. This issue's part: gathering observations."""
